"""The playground page with SmolLM2-135M-Instruct, photographed in headless Chromium for the docs.

Serves the model in this process, opens ``/`` in Debian's ``chromium`` through Playwright, asks
one question greedily, hovers a token of the answer to show its probability and alternatives,
and saves ``docs/chapters/img/playground.png``.

    python scripts/playground_screenshot.py
"""

import argparse
import shutil
from pathlib import Path

QUESTION = "What is the capital of France? Answer in one sentence."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/chapters/img/playground.png"))
    parser.add_argument("--hover", type=int, default=5, help="which answer token to hover")
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("needs Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    import groundwork
    from groundwork.serve import Engine, background_server, create_app

    pre = groundwork.load("smollm2-135m-instruct")
    engine = Engine(pre.model.eval(), pre.tokenizer, slots=4, max_len=512)
    app = create_app(engine, model_name="smollm2-135m-instruct", chat_template=pre.chat_template)
    with background_server(app) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 520})
        page.goto(url)
        expect(page.locator("#model")).to_contain_text("smollm2")
        page.eval_on_selector(
            "#temperature", "e => { e.value = '0'; e.dispatchEvent(new Event('input')); }"
        )
        page.fill("#max_tokens", "48")
        page.fill("#prompt", QUESTION)
        page.click("#send")
        expect(page.locator(".msg.assistant .token").first).to_be_visible(timeout=60_000)
        expect(page.locator("#send")).to_have_text("Send", timeout=120_000)
        page.locator(".msg.assistant .token").nth(args.hover).hover()
        expect(page.locator("#tooltip")).to_be_visible()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.out))
        print(page.locator(".msg.assistant .body").inner_text())
        browser.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
