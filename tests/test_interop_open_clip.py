"""lipkit -> open_clip -> lipkit, checked with open_clip's own create_model_and_transforms and
get_tokenizer, on Fashion-MNIST test images, Tux Paint stamps and real captions; an open_clip
architecture with OpenAI's tokenizer and QuickGELU imported (random or a local weights file).

open_clip lives in .venv-peer only (its torchvision is a CUDA build made importable by
lipkit.interop.gateway): `make test` runs this file there when .venv-peer exists (`make peer` or
`make bench` builds it; CI does). Elsewhere the whole module is skipped."""
import json
import os

import pytest
import torch
from _interop_data import (
    captions,
    fashion_images,
    gray_and_rgb_runs,
    lipkit_embeddings,
    max_difference,
    tuxpaint_stamps,
)

import lipkit
from lipkit.interop.gateway import OpenClipUnavailable, import_open_clip
from lipkit.interop import openclip
from lipkit.interop.export import export_run
from lipkit.interop.importer import import_model
from lipkit.interop.layout import InteropError, rename
from lipkit.runs.loading import load_directory

os.environ["HF_HUB_OFFLINE"] = "1"
try:
    open_clip = import_open_clip()
except OpenClipUnavailable:
    pytest.skip("open_clip is not importable here: these tests run under .venv-peer (`make peer` builds it, "
                "then `make test` runs them there)", allow_module_level=True)
TOL = 1e-5
LOCAL = "local-dir:"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return gray_and_rgb_runs(tmp_path_factory.mktemp("open_clip"))


@torch.no_grad()
def _open_clip_embeddings(path, images, texts):
    model, _, preprocess = open_clip.create_model_and_transforms(LOCAL + str(path))
    tokenize = open_clip.get_tokenizer(LOCAL + str(path))
    pixels, ids = torch.stack([preprocess(im) for im in images]), tokenize(texts)
    model.eval()
    return pixels, ids, model.encode_image(pixels, normalize=True), model.encode_text(ids, normalize=True)


def _cleaned(texts: list[str]) -> list[str]:
    """What open_clip's tokenizers do to a caption before tokenising it (ftfy, HTML entities,
    whitespace). lipkit tokenises the raw text, so for captions this changes (curly quotes, double
    spaces: 36 of the 949 Tux Paint captions) open_clip's ids are lipkit's ids of the cleaned text."""
    from open_clip.tokenizer import _clean_whitespace

    return [_clean_whitespace(t) for t in texts]


CURLY = ["A knight\u2019s helmet.", "A \u201cFuji\u201d apple.", "A calculator.  6x7=42"]  # Tux Paint captions


def test_fashion_tiny_round_trip_through_open_clip(runs, tmp_path):
    run = runs["gray"]
    report = export_run(run.run_dir, "open_clip", tmp_path / "oc")
    assert report.agreement is not None
    loaded = load_directory(run.run_dir)
    images = fashion_images(12) + [im.convert("L") for im, _ in tuxpaint_stamps(6)]
    texts = captions() + CURLY
    ours_px, ours_img, ours_txt = lipkit_embeddings(run.model, loaded.preprocess, loaded.tokenizer, images,
                                                     _cleaned(texts))
    pixels, ids, img, txt = _open_clip_embeddings(tmp_path / "oc", images, texts)
    assert torch.equal(ids, loaded.tokenizer(_cleaned(texts)))  # open_clip.get_tokenizer gives lipkit's ids
    assert not torch.equal(ids[-3:], loaded.tokenizer(CURLY))  # ... of the cleaned text
    assert max_difference(pixels, ours_px.expand(-1, 3, -1, -1)) < 1e-6  # its preprocess = the eval transform
    assert max_difference(img, ours_img) <= TOL and max_difference(txt, ours_txt) <= TOL

    import_model(f"open_clip:{tmp_path / 'oc'}", tmp_path / "back")
    back, back_preprocess, back_tokenizer = lipkit.load(tmp_path / "back")
    assert back.cfg.text.pooling == "eos" and back.cfg.vision.channels == 3
    _, img, txt = lipkit_embeddings(back, back_preprocess, back_tokenizer, images, texts)
    _, _, ours_raw_txt = lipkit_embeddings(run.model, loaded.preprocess, loaded.tokenizer, images, texts)
    assert max_difference(img, ours_img) <= TOL and max_difference(txt, ours_raw_txt) <= TOL


def test_rgb_run_round_trip_on_colour_stamps(runs, tmp_path):
    stamps = tuxpaint_stamps(12)
    if not stamps:
        pytest.skip("Tux Paint stamps are not in the cache (lipkit data fetch tuxpaint)")
    run = runs["rgb"]
    export_run(run.run_dir, "open_clip", tmp_path / "oc")
    loaded = load_directory(run.run_dir)
    images, texts = [im for im, _ in stamps], [c for _, c in stamps]
    ours_px, ours_img, ours_txt = lipkit_embeddings(run.model, loaded.preprocess, loaded.tokenizer, images,
                                                     _cleaned(texts))
    pixels, _, img, txt = _open_clip_embeddings(tmp_path / "oc", images, texts)
    assert max_difference(pixels, ours_px) < 1e-5  # torchvision's resize and centre crop = lipkit's
    assert max_difference(img, ours_img) <= TOL and max_difference(txt, ours_txt) <= TOL


def test_a_transposed_projection_fails_the_check(runs, tmp_path, monkeypatch):
    def wrong(cfg):  # the text projection copied as it is: [E, W] where open_clip keeps x @ [W, E]
        return [rename(r.ours, r.theirs[0]) if r.ours == "text_projection.weight" else r for r in right(cfg)]

    right = openclip.rules
    monkeypatch.setattr(openclip, "rules", wrong)
    with pytest.raises(InteropError, match=r"embeddings differ from lipkit's .*captions"):
        export_run(runs["gray"].run_dir, "open_clip", tmp_path / "oc")
    assert not (tmp_path / "oc").exists()


@pytest.fixture(scope="module")
def tiny_arch(tmp_path_factory):
    """An open_clip architecture with OpenAI's tokenizer (SimpleTokenizer), QuickGELU and argmax
    pooling, small enough to build in a second."""
    root = tmp_path_factory.mktemp("arch")
    cfg = {"embed_dim": 48, "quick_gelu": True,
           "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "head_width": 16, "layers": 2},
           "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2}}
    (root / "lipkit-test-tiny.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(root / "lipkit-test-tiny.json")
    return "lipkit-test-tiny"


def test_an_open_clip_architecture_imports_with_openais_tokenizer(tiny_arch, tmp_path):
    torch.manual_seed(1)
    source, _, preprocess = open_clip.create_model_and_transforms(tiny_arch)
    weights = tmp_path / "weights.pt"
    torch.save(source.state_dict(), weights)
    report = import_model(f"open_clip:{tiny_arch}:{weights}", tmp_path / "run")
    assert report.agreement.text <= TOL
    model, lipkit_preprocess, tokenizer = lipkit.load(tmp_path / "run")
    cfg = model.cfg
    assert (cfg.vision.activation, cfg.text.pooling, cfg.text.context_length) == ("quick_gelu", "argmax", 24)
    # the rebuilt BPE gives SimpleTokenizer's ids (it pads with 0 too) on real captions
    texts = captions() + CURLY + ["wow!! a cat?!", "Ünïcödé   spaces\tand TABS", "x" * 200]
    simple = open_clip.get_tokenizer(tiny_arch)
    assert torch.equal(tokenizer(texts), simple(texts))
    images = fashion_images(4) + [im for im, _ in tuxpaint_stamps(4)]
    with torch.no_grad():  # the weights file's model, not a fresh initialisation
        want_img = source.eval().encode_image(torch.stack([preprocess(im) for im in images]), normalize=True)
        want_txt = source.encode_text(simple(texts), normalize=True)
        got_img = model.encode_image(torch.stack([lipkit_preprocess(im) for im in images]), normalize=True)
        got_txt = model.encode_text(tokenizer(texts), normalize=True)
    assert max_difference(got_img, want_img) <= TOL and max_difference(got_txt, want_txt) <= TOL

    # and out again, to both formats (argmax pooling, QuickGELU, OpenAI's special tokens)
    assert export_run(tmp_path / "run", "open_clip", tmp_path / "oc").agreement.text <= TOL
    assert export_run(tmp_path / "run", "hf", tmp_path / "hf").agreement.text <= TOL


def test_unknown_architectures_and_missing_weights_are_one_line_errors(tiny_arch, tmp_path):
    with pytest.raises(InteropError, match="unknown architecture"):
        import_model("open_clip:No-Such-Arch", tmp_path / "a")
    with pytest.raises(InteropError, match="not a file; lipkit does not download"):
        import_model(f"open_clip:{tiny_arch}:laion2b_s34b_b79k", tmp_path / "b")
    with pytest.raises(InteropError, match="only ViT image towers import"):
        import_model("open_clip:RN50", tmp_path / "c")
    assert not any(tmp_path.iterdir())


class _Payload:
    """Unpickling this runs a shell command (what a weights file of unknown origin may hold)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickled_weights_are_refused_in_one_line_and_run_nothing(tiny_arch, tmp_path):
    source, _, _ = open_clip.create_model_and_transforms(tiny_arch)
    state = {**source.state_dict(), "payload": _Payload(tmp_path / "code-ran")}
    torch.save(state, tmp_path / "weights.pt")
    with pytest.raises(InteropError, match=r"its weights file is a pickle holding more than tensors \(it refers to "
                                           r"posix.system\); lipkit does not load it"):
        import_model(f"open_clip:{tiny_arch}:{tmp_path / 'weights.pt'}", tmp_path / "run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.pt"]
