"""Take docs/search-page.png: the search page over SciFact BM25 + MiniLM (and their hybrid) in headless Chromium,
showing a judged test query with its nDCG@10.

    uniret index --data scifact --retriever bm25  --output idx/scifact-bm25
    uniret index --data scifact --retriever dense --output idx/scifact-dense
    python docs/search_page_screenshot.py --index idx/scifact-bm25 --index idx/scifact-dense
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

from uniret.index.service import background_server, create_app
from uniret.index.serving import ServiceConfig, index_names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", action="append", required=True)
    ap.add_argument("--data", default="scifact")
    ap.add_argument("--pick", default="hybrid", help="the index shown")
    ap.add_argument("--qid", default=None, help="the judged query shown (default: the first)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "search-page.png"))
    args = ap.parse_args()
    app = create_app(ServiceConfig(indexes=index_names(args.index), data=args.data, device="cpu"))
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with background_server(app) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 820}, device_scale_factor=1)
        page.goto(url + "/")
        page.wait_for_selector("#judged option:nth-child(2)", state="attached")
        page.select_option("#index", args.pick)
        qid = args.qid or page.locator("#judged option").nth(1).get_attribute("value")
        page.select_option("#judged", qid)
        page.wait_for_selector("#ndcg")
        page.screenshot(path=args.out)
        browser.close()
    sys.stdout.write(f"wrote {args.out}\n")


if __name__ == "__main__":
    main()
