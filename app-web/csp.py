"""Trunk post_build hook: add the sha256 of every inline <script> trunk wrote into index.html to
the Content-Security-Policy's script-src, so the policy can stay 'self' (no 'unsafe-inline')."""
import base64, hashlib, os, re, sys

path = os.path.join(os.environ["TRUNK_STAGING_DIR"], "index.html")
html = open(path, encoding="utf-8").read()
hashes = []
for m in re.finditer(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", html, re.S):
    digest = hashlib.sha256(m.group(1).encode("utf-8")).digest()
    hashes.append("'sha256-%s'" % base64.b64encode(digest).decode())
if not hashes:
    sys.exit(0)
new, n = re.subn(r"(script-src 'self' 'wasm-unsafe-eval')", r"\1 " + " ".join(hashes), html, count=1)
if n != 1:
    sys.exit("csp.py: no script-src in index.html's Content-Security-Policy")
open(path, "w", encoding="utf-8").write(new)
