"""Zero-shot classification and retrieval recall@k, on embeddings whose answers are known by
hand."""

import pytest
import torch

from groundwork.evaluate.zero_shot import recall_at_k, zero_shot_classifier, zero_shot_predict


def test_classifier_averages_normalised_templates() -> None:
    # class 0: templates along x (length 2) and y (length 1); class 1: along -x twice
    prompts = torch.tensor([[2.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [-3.0, 0.0]])
    w = zero_shot_classifier(prompts, n_templates=2)
    s = 2**-0.5
    torch.testing.assert_close(w, torch.tensor([[s, s], [-1.0, 0.0]]))


def test_classifier_refuses_uneven_templates() -> None:
    with pytest.raises(ValueError, match="3 prompts are not 2 per class"):
        zero_shot_classifier(torch.randn(3, 4), n_templates=2)


def test_prediction_is_the_closest_prompt_by_cosine_not_length() -> None:
    classifier = zero_shot_classifier(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    images = torch.tensor([[10.0, 1.0], [0.1, 0.2], [-1.0, 0.5]])
    probs = zero_shot_predict(images, classifier)
    assert probs.argmax(-1).tolist() == [0, 1, 1]
    torch.testing.assert_close(probs.sum(-1), torch.ones(3))


def test_recall_at_k_by_hand() -> None:
    # three images; captions: two images share "a" (rows 0 and 1), one has "b" (row 2)
    captions = ["a", "a", "b"]
    text = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # image 0 is nearest "a" (right), image 1 nearest "b" (wrong), image 2 nearest "b" (right)
    image = torch.tensor([[1.0, 0.1], [0.1, 1.0], [0.0, 1.0]])
    r = recall_at_k(image, text, captions, ks=(1, 2))
    assert r["image_to_text_r@1"] == pytest.approx(2 / 3)
    assert r["image_to_text_r@2"] == 1.0  # only two distinct captions
    # caption "a": nearest image is 0 (an "a" image: hit); "b": nearest is image 2 (hit)
    assert r["text_to_image_r@1"] == 1.0


def test_recall_needs_one_caption_per_image() -> None:
    with pytest.raises(ValueError, match="one caption"):
        recall_at_k(torch.randn(3, 2), torch.randn(2, 2), ["a", "b"])


def test_the_scale_sharpens_probabilities_but_keeps_the_prediction() -> None:
    classifier = zero_shot_classifier(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    images = torch.tensor([[1.0, 0.5]])
    flat, sharp = zero_shot_predict(images, classifier), zero_shot_predict(images, classifier, 100)
    assert flat.argmax() == sharp.argmax() == 0
    assert sharp[0, 0] > 0.99 > flat[0, 0]
