"""The slotted KV cache: each row decoded at its own length equals running its sequence alone."""

import pytest
import torch

from groundwork.nn import KVCache
from groundwork.serve.slots import SlotKVCache
from helpers import tiny_gpt, tiny_llama

PROMPTS = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14, 15, 16, 17, 18], [20]]


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt], ids=["llama", "gpt"])
def test_batched_decode_at_different_lengths_equals_each_sequence_alone(make) -> None:
    model = make()
    cache = SlotKVCache(model.new_kv_cache(4, 32))
    follow = [[3, 4, 2], [7, 1, 9], [2, 2, 5], [8, 6, 4]]  # three decoding steps per row
    with torch.no_grad():
        for slot, prompt in enumerate(PROMPTS):
            model(torch.tensor([prompt]), kv_cache=cache.prefill(slot))
        lengths = torch.tensor([len(p) for p in PROMPTS])
        for step in range(3):
            tokens = torch.tensor([[f[step]] for f in follow])  # (B, 1)
            view, mask = cache.decode(lengths)
            assert mask.shape == (4, int(lengths.max()) + 1)
            logits = model(
                tokens, attention_mask=mask, position_ids=lengths[:, None], kv_cache=view
            )
            for b, prompt in enumerate(PROMPTS):
                alone = model(torch.tensor([prompt + follow[b][: step + 1]]))[0, -1]
                torch.testing.assert_close(logits[b, -1], alone, rtol=1e-5, atol=1e-5)
            lengths = lengths + 1


def test_move_copies_a_row_so_the_batch_stays_contiguous() -> None:
    model = tiny_llama()
    cache = SlotKVCache(model.new_kv_cache(3, 16))
    with torch.no_grad():
        for slot, prompt in enumerate(PROMPTS[:3]):
            model(torch.tensor([prompt]), kv_cache=cache.prefill(slot))
        cache.move(src=2, dst=0, length=len(PROMPTS[2]))  # row 0 finished; row 2 takes its place
        view, mask = cache.decode(torch.tensor([7, 2]))
        logits = model(
            torch.tensor([[1], [1]]),
            attention_mask=mask,
            position_ids=torch.tensor([[7], [2]]),
            kv_cache=view,
        )
        torch.testing.assert_close(
            logits[0, -1], model(torch.tensor([[*PROMPTS[2], 1]]))[0, -1], rtol=1e-5, atol=1e-5
        )
        torch.testing.assert_close(
            logits[1, -1], model(torch.tensor([[*PROMPTS[1], 1]]))[0, -1], rtol=1e-5, atol=1e-5
        )


def test_views_speak_the_kv_cache_protocol_and_refuse_overflow() -> None:
    cache = SlotKVCache(KVCache(2, 1, 1, 4, 2))
    assert isinstance(cache.prefill(1), KVCache)
    with pytest.raises(ValueError, match="outside"):
        cache.prefill(2)
    with pytest.raises(ValueError, match="overflow"):
        cache.decode(torch.tensor([4, 0]))
    with pytest.raises(ValueError, match="overflow"):
        cache.prefill(0).update(0, torch.zeros(1, 1, 5, 2), torch.zeros(1, 1, 5, 2), 0)
