"""Prompt files given in params (`prompts.harmful_file` / `helpful_file`): a JSON list of "Human: ..." transcripts from
a local path or an http(s) URL, checked against a pinned sha256; a URL's file is cached by its digest under
$HF_HOME/url-cache for offline machines. Read by the `prompts` stage and by `pin --fetch`, `rehearse`.
"""

from __future__ import annotations

import hashlib
import json
import urllib.request
from pathlib import Path

from .io import StageError, decode_utf8, open_input, unicode_problem, write_bytes


def url_cache(hf_home: Path | None = None) -> Path:
    """Files fetched by URL, stored by their sha256 next to the Hugging Face cache: $HF_HOME/url-cache/<sha256>."""
    from huggingface_hub import constants

    return Path(hf_home or constants.HF_HOME) / "url-cache"


def fetch_url(url: str, sha256: str | None) -> bytes:
    """The bytes at `url`: from the cache when a copy with the pinned digest is there (offline machines), else
    downloaded, checked against the digest and cached."""
    from huggingface_hub import constants

    cached = url_cache() / sha256 if sha256 else None
    if cached is not None and cached.is_file():
        data = cached.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256:  # checked on every read: the cache is a folder anyone may write to
            raise StageError(
                f"{cached}: cached copy of {url} has sha256 {digest}, not the {sha256} pinned in params "
                "(corrupt or replaced); delete it and fetch again"
            )
        return data
    if constants.HF_HUB_OFFLINE:
        where = f" and no cached copy at {cached}" if cached else ""
        raise StageError(
            f"{url}: HF_HUB_OFFLINE=1{where}; fetch it where there is a network "
            "(python -m commands.pin --fetch) or unset HF_HUB_OFFLINE"
        )
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:  # plain JSON; nothing is executed
            data = resp.read()
    except OSError as exc:
        where = f"; or put a copy at {cached}" if cached else ""
        raise StageError(f"{url}: cannot download the prompt file ({exc}){where}") from None
    if sha256:
        check_digest(url, data, sha256)
        write_bytes(cached, data)
    return data


def check_digest(source: str, data: bytes, sha256: str) -> None:
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise StageError(f"{source}: sha256 {digest} is not the {sha256} pinned in params (a different file)")


def load_prompt_file(source: str, sha256: str | None = None) -> list[str]:
    """A JSON list of prompt strings from a local path or an http(s) URL, checked against `sha256` when given."""
    if source.startswith(("http://", "https://")):
        data = fetch_url(source, sha256)
    else:
        with open_input(source, "rb") as fh:
            data = fh.read()
        if sha256:
            check_digest(source, data, sha256)
    try:
        parsed = json.loads(decode_utf8(data, source))
    except json.JSONDecodeError as exc:
        raise StageError(f"{source}: line {exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(parsed, list) or not parsed:
        raise StageError(f"{source}: expected a non-empty JSON list of prompt strings")
    for i, item in enumerate(parsed):
        if not isinstance(item, str) or not item.strip():
            raise StageError(f"{source}: item {i}: expected a non-empty string")
        bad = unicode_problem(item)
        if bad:
            raise StageError(f"{source}: item {i}: {bad}")
    return parsed
