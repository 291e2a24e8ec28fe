"""Both reports in a real browser (Debian's chromium, headless): they load, every image decodes,
and nothing is fetched from the network."""

from __future__ import annotations

import os
import shutil

import pytest

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')


@pytest.fixture(scope='module')
def browser():
    if CHROMIUM is None:
        if os.environ.get('CI'):
            pytest.fail("chromium is missing: make test-integration installs Debian's chromium")
        pytest.skip('chromium is not installed (make test-integration installs it)')
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # Debian's chromium, not a browser playwright would download
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=['--no-sandbox'])
        yield browser
        browser.close()


@pytest.mark.parametrize('name', ['sub-01.html', 'group.html'])
def test_the_report_loads_with_every_image_and_no_request(browser, both_levels, tmp_path,
                                                          name):  # fmt: skip
    _, out, _ = both_levels
    page = browser.new_page(viewport={'width': 1280, 'height': 900})
    requests, errors = [], []
    page.on('request', lambda request: requests.append(request.url))
    page.on('pageerror', lambda error: errors.append(str(error)))
    response = page.goto((out / name).as_uri(), wait_until='load')
    assert response is not None
    assert response.ok
    assert page.title() in ('sub-01', 'Group')
    images = page.evaluate(
        'Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])'
    )
    assert len(images) >= 4
    for complete, width, height in images:
        assert complete
        assert width > 0
        assert height > 0
    external = [url for url in requests if not url.startswith(('file:', 'data:'))]
    assert external == []
    assert errors == []
    shot = tmp_path / f'{name}.png'
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    page.close()
