"""SECURITY.md's rules, checked: nothing unpickles, the server serves only its own files, tokens stay secret."""

import logging
import re
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]

# (what is wrong, a pattern that finds it, what a matched call must contain to be fine)
UNSAFE = (
    ("imports a pickle-based module", re.compile(r"^\s*(?:import|from)\s+(?:c?pickle|dill|cloudpickle|joblib|shelve|marshal)\b", re.M), None),
    ("unpickles", re.compile(r"\b(?:c?pickle|dill|cloudpickle|joblib|marshal)\.loads?\("), None),
    ("reads a pickle with pandas", re.compile(r"\bread_pickle\("), None),
    ("torch.load without weights_only=True", re.compile(r"\btorch\.(?:serialization\.)?load\("), "weights_only=True"),
    ("numpy.load without allow_pickle=False", re.compile(r"\b(?:np|numpy)\.load\("), "allow_pickle=False"),
    ("allow_pickle=True", re.compile(r"allow_pickle\s*=\s*True"), None),
    ("an unsafe YAML loader", re.compile(r"\byaml\.(?:load|unsafe_load|full_load|load_all)\(|\byaml\.(?:Unsafe|Full)?Loader\b"), None),
    ("from_pretrained without use_safetensors=True", re.compile(r"\.from_pretrained\("), "use_safetensors=True"),
)


def call_text(text: str, start: int) -> str:
    """The call that opens at or after `start`, up to its balanced closing parenthesis."""
    depth, i = 0, text.index("(", start)
    for j in range(i, len(text)):
        depth += {"(": 1, ")": -1}.get(text[j], 0)
        if depth == 0:
            return text[start:j + 1]
    return text[start:]


def unsafe_calls(text: str) -> list[str]:
    code = re.sub(r'("""|\'\'\')[\s\S]*?\1', "", text)  # docstrings may name what they refuse
    code = re.sub(r"#.*", "", code)
    found = []
    for what, pattern, needed in UNSAFE:
        for match in pattern.finditer(code):
            if needed is None or needed not in call_text(code, match.start()):
                found.append(f"{what}: {match.group(0).strip()}")
    return found


def test_the_scanner_finds_each_kind_of_unsafe_call():
    bad = ("import pickle\nx = pickle.loads(b)\ny = torch.load(path, map_location='cpu')\n"
           "z = np.load(f, allow_pickle=True)\nw = yaml.load(s)\nm = Model.from_pretrained(p)\n"
           "d = pd.read_pickle(f)\n")
    found = unsafe_calls(bad)
    assert len(found) == 8, found  # np.load both lacks allow_pickle=False and sets it True
    ok = ("torch.load(path,\n   weights_only=True)\nnp.load(f, allow_pickle=False)\nyaml.safe_load(s)\n"
          "Model.from_pretrained(p, use_safetensors=True)\n'''we never call pickle.loads'''\n# nor torch.load(x)\n")
    assert unsafe_calls(ok) == []


def test_no_module_of_the_studio_unpickles():
    files = [*sorted((ROOT / "studio").rglob("*.py")), ROOT / "app.py"]
    problems = [f"{path.relative_to(ROOT)}: {item}" for path in files if path.is_file()
                for item in unsafe_calls(path.read_text(encoding="utf-8"))]
    assert problems == []


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from space_app import served

    with served(tmp_path_factory.mktemp("outputs")) as running:
        yield running


def small_run_yaml(seed: int = 0) -> str:
    return ("dataset: {name: digits, size: 100}\ndenoiser: {name: wiener}\nsampler: {name: ddim, steps: 2}\n"
            f"n: 2\nseed: {seed}\ndevice: cpu\n")


def fetch(app, path: str) -> httpx.Response:
    return httpx.get(f"{app.url}gradio_api/file={path}")


def test_the_server_serves_only_its_own_files(app, tmp_path):
    from huggingface_hub import constants
    from space_app import Page

    done = Page(app).call("run_config", None, small_run_yaml())
    assert done["success"]
    final = done["output"]["data"][3]
    assert httpx.get(final["url"]).status_code == 200  # what the page shows is served
    run_folder = next(p for p in app.outputs.iterdir() if p.is_dir())
    assert fetch(app, run_folder / "samples.png").status_code == 200  # and the outputs folder
    secret = tmp_path / "secret.txt"
    secret.write_text("not for visitors")
    refused = ["/etc/passwd", ROOT / "app.py", ROOT / "README.md", ROOT / "studio" / "limits.py", secret,
               f"{run_folder}/../../{secret.parent.name}/{secret.name}", app.outputs.parent / "elsewhere.txt",
               "/proc/self/environ"]
    for path in refused:
        answer = fetch(app, path)
        assert answer.status_code in (403, 404), (path, answer.status_code)
        assert "not for visitors" not in answer.text and "root:" not in answer.text
    assert str(constants.HF_HOME) in app.demo.blocked_paths  # the saved Hub token's folder, even if allowed


def test_the_hub_token_never_reaches_the_page_or_the_logs(app, fake_hub, monkeypatch, caplog, capfd):
    from space_app import Page

    monkeypatch.setenv("HF_ENDPOINT", fake_hub.url)
    caplog.set_level(logging.DEBUG)
    page = Page(app)
    assert page.call("run_config", None, small_run_yaml(seed=1))["success"]
    shared = page.call("share", None, "alice/diffusion-runs", fake_hub.token, False)
    status, token_box = shared["output"]["data"]
    assert status.startswith("✅ Shared as run") and token_box == ""  # pushed, and the box was cleared
    assert fake_hub.commits("dataset", "alice/diffusion-runs")
    wrong = "hf_wrongTokenThatMustStaySecret42"
    refused = page.call("share", None, "alice/diffusion-runs", wrong, False)
    status, token_box = refused["output"]["data"]
    assert status.startswith("❌") and token_box == ""
    seen = [str(shared), str(refused), str(page.frames), httpx.get(app.url).text,
            httpx.get(f"{app.url}config").text, caplog.text, *capfd.readouterr()]
    files = [p for root in (app.outputs,) for p in root.rglob("*") if p.is_file()]
    for token in (fake_hub.token, wrong):
        assert not any(token in text for text in seen)
        assert not any(token.encode() in p.read_bytes() for p in files)


def upload(app, name: str, data: bytes) -> dict:
    answer = httpx.post(f"{app.url}gradio_api/upload", files={"files": (name, data)})
    assert answer.status_code == 200
    return {"path": answer.json()[0], "orig_name": name, "meta": {"_type": "gradio.FileData"}}


def test_uploaded_pictures_are_decoded_only_as_png_jpeg_or_webp(app):
    import io

    from PIL import Image
    from space_app import Page

    inputs = app.demo.fns[app.fn_index("noise")].inputs  # the page sends them by component; the API in id order
    defaults = {getattr(c, "elem_id", None) or i: getattr(c, "value", None) for i, c in enumerate(inputs)}

    def noise_of(picture: dict) -> dict:
        data = {**defaults, "fw-source": "upload", "fw-upload": picture}
        return Page(app).call("noise", *data.values())

    png, gif = io.BytesIO(), io.BytesIO()
    Image.new("L", (12, 12), 200).save(png, format="PNG")
    Image.new("L", (12, 12), 200).save(gif, format="GIF")
    assert noise_of(upload(app, "fine.png", png.getvalue()))["success"]
    for name, data in (("disguised.png", gif.getvalue()),  # another format under a .png name
                       ("eps.png", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 12 12\n")):
        refused = noise_of(upload(app, name, data))
        assert refused["success"] is False, name
        assert refused["output"]["error"] == "upload: not a readable PNG, JPEG or WebP picture"
