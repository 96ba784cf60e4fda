"""Any prompt in the pocket world (pocket/prompts.py): prompt text -> attributes over the pocket vocabulary.

- every catalogue prompt parses to exactly the spec the catalogue assigned it (a literal copy below, so a
  change of the catalogue cannot hide a change of the parse), with the same kind;
- prompts outside the catalogue parse to the right attributes; the world's own captions parse to their true
  attributes (the parser reads the wording the captions use);
- prompts the world cannot render are refused naming the word, at the plugin's check_prompts and at
  `sweeps validate`; the refused words are the ones pocket-SD's and pocket-CLIP's text towers never learnt
  (zero embedding rows), the accepted ones all have learnt rows;
- ground truth and metrics of a catalogue prompt are what they were (literal spec, same seeds -> identical
  images, same folder name), and prompt_accuracy / attribute_preservation / ground_truth_fid run for a
  non-catalogue prompt on real pocket-StyleGAN2 samples, checked against hand computations.
"""
from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from open_clip.tokenizer import SimpleTokenizer
from PIL import Image
from safetensors.torch import load_file

from pocket import metrics as M
from pocket import prompts as P
from pocket import refs as R
from pocket import summary as S
from pocket import world as W
from pocket.common import STYLEGAN_PATH
from trainables.generators import load_generator

REPO = Path(__file__).resolve().parents[1]

# the catalogue's specs as they were before pocket/prompts.py existed (a literal copy, not W.CATALOGUE)
CATALOGUE_SPECS = {
    "a circle": ({"shape": "circle"}, "source"),
    "a square": ({"shape": "square"}, "short"),
    "a triangle": ({"shape": "triangle"}, "short"),
    "a star": ({"shape": "star"}, "short"),
    "a red circle": ({"shape": "circle", "colour": "red"}, "short"),
    "a blue circle": ({"shape": "circle", "colour": "blue"}, "short"),
    "a striped circle": ({"shape": "circle", "pattern": "striped"}, "short"),
    "an outlined circle": ({"shape": "circle", "pattern": "outlined"}, "short"),
    "a circle on a black background": ({"shape": "circle", "background": "black"}, "short"),
    "a small circle": ({"shape": "circle", "size": "small"}, "short"),
    "a large red striped square on a black background, simple flat illustration, centered, high quality":
        ({"shape": "square", "colour": "red", "pattern": "striped", "background": "black", "size": "large"}, "long"),
    "an image of a small blue outlined triangle on a white background, minimalist digital art, sharp edges":
        ({"shape": "triangle", "colour": "blue", "pattern": "outlined", "background": "white", "size": "small"},
         "long"),
    "a drawing of a yellow star against a gray background, clean vector graphic, 2d render, high quality":
        ({"shape": "star", "colour": "yellow", "background": "gray"}, "long"),
    "a picture of a purple striped circle on a white background, simple flat illustration, minimalist":
        ({"shape": "circle", "colour": "purple", "pattern": "striped", "background": "white"}, "long"),
}

NEW_PROMPTS = {
    "a big green triangle on a white background":
        {"shape": "triangle", "colour": "green", "background": "white", "size": "large"},
    "a blue striped star": {"shape": "star", "colour": "blue", "pattern": "striped"},
    "A Tiny, HOLLOW square.": {"shape": "square", "pattern": "outlined", "size": "small"},
    "a photo of a solid yellow circle with a gray backdrop, 2d render": {
        "shape": "circle", "colour": "yellow", "pattern": "plain", "background": "gray"},
    "a star that is purple": {"shape": "star", "colour": "purple"},
    "a red shape, black background": {"colour": "red", "background": "black"},       # no shape named
    "a striped object, plain style": {"pattern": "striped"},    # "plain style" is a style filler, not a pattern
    "an illustration of a large circle against a white background, centered composition":
        {"shape": "circle", "background": "white", "size": "large"},
}


def test_catalogue_prompts_parse_to_their_catalogue_attributes():
    assert {p.text for p in W.CATALOGUE} == set(CATALOGUE_SPECS), "the catalogue changed: update CATALOGUE_SPECS"
    for p in W.CATALOGUE:
        spec, kind = CATALOGUE_SPECS[p.text]
        assert P.parse_prompt(p.text) == spec == p.spec, p.text
        assert P.kind_of(spec) == kind == p.kind, p.text
        assert P.parse_prompt(p.text.upper() + " ,") == spec                 # case and punctuation
        assert P.resolve("  " + p.text.upper()) is p                          # catalogue entries stay themselves


def test_new_prompts_parse_to_the_right_attributes_and_kind():
    for text, spec in NEW_PROMPTS.items():
        assert P.parse_prompt(text) == spec, text
        p = P.resolve(text)
        assert p.text == text and p.spec == spec
    # kinds from the changed attributes (plain circles are the source): 0 source, 1-2 short, >= 3 long
    assert P.resolve("a photo of a plain circle").kind == "source"
    assert P.resolve("a red square").kind == "short"                        # shape + colour
    assert P.resolve("a blue striped star").kind == "long"                  # shape + colour + pattern
    assert P.resolve("a big green triangle on a white background").kind == "long"
    assert S.prompt_kind("a small green circle") == "short" and S.prompt_kind("a red thing") == "other"
    assert S.prompt_kind("a red circle") == "short"


def test_the_worlds_captions_parse_to_their_true_attributes():
    """The parser reads the wording the world's captions use: 3000 captions of the whole world (every wording,
    omission and style filler) parse, and every attribute a caption states is the true one. A caption that
    omits every attribute ("an image of a shape") is refused for that reason alone."""
    a = W.sample_world(3000, seed=21)
    caps = W.captions(a, seed=4)
    stated, empty = 0, 0
    attr_words = set(W.SHAPES + W.COLOURS + ["background", "backdrop", "small", "tiny", "large", "big", "striped",
                                              "outlined", "hollow", "solid"])
    for i, cap in enumerate(caps):
        try:
            spec = P.parse_prompt(cap)
        except P.PromptError as err:
            assert err.problems == ["states no attribute (name a shape, colour, pattern, size or background)"], cap
            assert not attr_words & set(re.findall(r"[a-z]+", cap)), cap
            empty += 1
            continue
        for attr, value in spec.items():
            assert W.VOCAB[attr].index(value) == int(getattr(a, attr)[i]), (cap, attr)
        stated += len(spec)
        words = re.findall(r"[a-z]+", cap)
        if any(w in words for w in W.SHAPES):
            assert "shape" in spec, cap
        if any(w in words for w in W.COLOURS):
            assert "colour" in spec, cap
        if "background" in words or "backdrop" in words:
            assert "background" in spec, cap
    assert stated / len(caps) > 2.0          # captions state ~3 attributes on average: the parse reads them
    assert empty < 0.02 * len(caps)


@pytest.mark.parametrize("text, word, hint", [
    ("a purple hexagon", "hexagon", None),
    ("a photo of a dog", "dog", None),
    ("two red circles", "circles", "circle"),           # plural: the text towers never saw it
    ("a circle on a grey background", "grey", "gray"),
    ("the red circle", "the", None),
])
def test_unknown_words_are_refused_naming_the_word(text, word, hint):
    with pytest.raises(P.PromptError) as err:
        P.parse_prompt(text)
    assert word in err.value.words
    msg = str(err.value)
    assert msg.startswith(repr(text)) and f"unknown word {word!r}" in msg
    if hint:
        assert f"did you mean {hint!r}?" in msg


def test_misplaced_and_conflicting_words_are_refused():
    cases = {"a white circle": ("white", "'white' is a background colour, not an object colour"),
             "a circle on a red background": ("red", "'red' is an object colour, not a background colour"),
             "a red blue circle": ("blue", "colour stated twice: 'red' vs 'blue'"),
             "a small big star": ("big", "size stated twice"),
             "a circle, background": ("background", "'background' without a background colour"),
             "a picture of, high quality": (None, "states no attribute")}
    for text, (word, why) in cases.items():
        with pytest.raises(P.PromptError) as err:
            P.parse_prompt(text)
        assert why in str(err.value), (text, str(err.value))
        assert word is None or word in err.value.words
    # a repeated synonym of the same value is no conflict
    assert P.parse_prompt("a small tiny circle") == {"shape": "circle", "size": "small"}


def test_accepted_words_are_exactly_those_the_pocket_text_towers_learnt():
    """Why the vocabulary is the captions' words: every accepted word's tokens have learnt (non-zero) embedding
    rows in pocket-SD's text encoder and in pocket-CLIP; the refused examples each hit a zero row."""
    tok = SimpleTokenizer()              # the CLIP BPE both pocket text towers use (SD's tokenizer ids match)
    sd_rows = load_file(str(REPO / "pocket/models/sd/text_encoder/model.safetensors"))[
        "embeddings.token_embedding.weight"]
    clip_rows = load_file(str(REPO / "pocket/models/clip/open_clip_model.safetensors"))["token_embedding.weight"]

    def learnt(word: str) -> bool:
        ids = tok.encode(word)
        return bool(ids) and all(sd_rows[i].abs().sum() > 0 and clip_rows[i].abs().sum() > 0 for i in ids)

    unlearnt = [w for w in P.KNOWN_WORDS if not learnt(w)]
    assert unlearnt == [], f"accepted words the pocket text towers never learnt: {unlearnt}"
    for word in ("circles", "the", "grey", "dog", "hexagon", "dotted"):
        assert not learnt(word), word
        with pytest.raises(P.PromptError):
            P.parse_prompt(f"a {word}")


def test_plugins_refuse_unrenderable_prompts_naming_word_and_vocabulary():
    for fn in (M.prompt_accuracy, M.attribute_preservation, M.ground_truth_fid):
        fn.check_prompts(list(NEW_PROMPTS) + [p.text for p in W.CATALOGUE])
    with pytest.raises(ValueError) as err:
        M.ground_truth_fid.check_prompts(["a big green triangle", "a purple hexagon", "a white circle"])
    msg = str(err.value)
    assert "\n" not in msg                                      # one line in the preflight's list
    assert "'a purple hexagon': unknown word 'hexagon'" in msg and "'a white circle': 'white' is" in msg
    assert "big green triangle" not in msg
    vocab = msg.split("accepted:")[1]
    assert "shape: circle, square, triangle, star" in vocab and "colour: red, green, blue, yellow, purple" in vocab
    assert "background: white, black, gray" in vocab and "pattern: plain/solid, striped, outlined/hollow" in vocab
    assert "size: small/tiny, large/big" in vocab and "ignored fillers: " in vocab


def test_sweep_validate_accepts_new_prompts_and_refuses_unknown_words(tmp_path):
    spec = yaml.safe_load((REPO / "sweeps/pocket/any_prompt.yaml").read_text())
    assert all(P.resolve(p) not in W.CATALOGUE for p in spec["grid"]["prompt"])   # the file's prompts are new
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    ok = subprocess.run([sys.executable, "-m", "sweeps", "validate", str(REPO / "sweeps/pocket/any_prompt.yaml")],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)   # paths relative to the repo
    assert ok.returncode == 0, ok.stdout + ok.stderr
    spec["grid"]["prompt"] = ["a green circle", "a purple hexagon"]
    spec["storage_path"] = str(tmp_path / "st")
    bad_path = tmp_path / "bad.yaml"
    bad_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    bad = subprocess.run([sys.executable, "-m", "sweeps", "validate", str(bad_path)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 3, bad.stdout + bad.stderr
    assert "unknown word 'hexagon'" in bad.stderr and "pocket.metrics:prompt_accuracy" in bad.stderr
    assert "'a green circle'" not in bad.stderr


def test_catalogue_ground_truth_is_unchanged(tmp_path):
    """Same literal spec, same seeds -> identical images; the reference folder keeps its old name."""
    for text, (spec, _) in CATALOGUE_SPECS.items():
        expect = W.render(W.sample_source(12, seed=5).with_(**spec))
        assert torch.equal(W.reference_images(P.resolve(text), 12, seed=5), expect), text
        assert torch.equal(W.reference_images(text, 12, seed=5), expect), text
    text = "a large red striped square on a black background, simple flat illustration, centered, high quality"
    old_name = re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:80]          # the folder rule before any-prompt
    folder = R.reference_dir(text.upper(), n=6, seed=5, root=tmp_path)
    assert folder.name == f"{old_name}_n6_s5"
    got = np.stack([np.asarray(Image.open(f)) for f in sorted(folder.glob("*.png"))])
    ref = W.render(W.sample_source(6, seed=5).with_(**CATALOGUE_SPECS[text][0]))
    assert np.array_equal(got, (ref.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())


def test_new_prompt_ground_truth_is_the_source_with_the_parsed_attributes(tmp_path):
    text = "a big green triangle on a white background"
    a = W.sample_source(12, seed=8)
    gt = W.ground_truth(P.resolve(text), a)
    assert (gt.shape == 2).all() and (gt.colour == 1).all() and (gt.background == 0).all() and (gt.size == 1).all()
    assert torch.equal(gt.pattern, a.pattern)
    for cont in ("size_u", "x_u", "y_u", "shade"):
        assert torch.equal(getattr(gt, cont), getattr(a, cont))
    # two wordings of one spec share one reference folder, named by the spec
    f1 = R.reference_dir(text, n=4, seed=8, root=tmp_path)
    f2 = R.reference_dir("an image of a large green triangle, white backdrop", n=4, seed=8, root=tmp_path)
    assert f1 == f2 and f1.name == "attrs_shape-triangle_colour-green_background-white_size-large_n4_s8"
    with pytest.raises(P.PromptError, match="unknown word 'hexagon'"):
        R.reference_dir("a hexagon", n=4, seed=8, root=tmp_path)


def test_metrics_of_a_catalogue_prompt_are_unchanged():
    """accuracy_of / preservation_of on fixed predictions equal the hand computation with the literal spec."""
    g = torch.Generator().manual_seed(3)
    n = 200
    pred = {k: torch.randint(0, c, (n,), generator=g) for k, c in
            {"shape": 5, "colour": 5, "background": 3, "pattern": 3, "size": 2}.items()}
    src = {k: torch.where(torch.rand(n, generator=g) < 0.7, v, torch.zeros_like(v)) for k, v in pred.items()}
    pred["pos"], src["pos"] = torch.rand(n, 2, generator=g) * 32, torch.rand(n, 2, generator=g) * 32
    for text, (spec, _) in CATALOGUE_SPECS.items():
        ok = np.ones(n, bool)
        for attr, value in spec.items():
            ok &= pred[attr].numpy() == W.VOCAB[attr].index(value)
        assert M.accuracy_of(pred, text)["pocket/prompt_accuracy"] == pytest.approx(ok.mean(), abs=1e-7)
        keep = np.ones(n, bool)
        for attr in ("shape", "colour", "background", "pattern", "size"):
            if attr not in spec:
                keep &= src[attr].numpy() == pred[attr].numpy()
        assert M.preservation_of(src, pred, text)["pocket/preservation"] == pytest.approx(keep.mean(), abs=1e-7)


class _Ctx:
    """What the pocket plugins read of evaluation's EvalContext (samples, source samples, prompt)."""

    def __init__(self, samples: Path, source: Path, prompt: str):
        self.samples_dir, self._source, self.prompt = samples, source, prompt

    def source_samples_dir(self) -> Path:
        return self._source


def _frechet64(f1: np.ndarray, f2: np.ndarray) -> float:
    """FID in float64 via eigenvalues: tr sqrt(S1 S2) = sum sqrt(eig(sqrt(S1) S2 sqrt(S1))) (no sqrtm)."""
    m1, m2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    w, v = np.linalg.eigh(s1)
    r1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    tr = np.sqrt(np.clip(np.linalg.eigvalsh(r1 @ s2 @ r1), 0, None)).sum()
    return float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr)


def test_pocket_plugins_run_for_a_non_catalogue_prompt(tmp_path, monkeypatch, one_torch_thread):
    """Real pocket-StyleGAN2 samples as the frozen generator; as the 'adapted' generator, the perfect adaptation:
    the ground truth of the parsed prompt on the same latents' attributes. Every number is recomputed by hand
    from the judge's predictions and features."""
    # reference folders of this test only, 300 images instead of 2000 (seconds, not a minute, on 2 shared cores)
    monkeypatch.setattr(R, "reference_dir", functools.partial(R.reference_dir, n=300, root=tmp_path / "refs"))
    text = "a blue hollow star on a black backdrop"
    spec = {"shape": "star", "colour": "blue", "background": "black", "pattern": "outlined"}
    assert P.parse_prompt(text) == spec
    gen = load_generator(STYLEGAN_PATH)
    z = torch.randn(192, gen.cfg.style_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        src01 = (gen(z, noise_mode="const").clamp(-1, 1) + 1) / 2
    new01 = W.render(W.attrs_from_z(z).with_(**spec))
    src_dir, new_dir = R.save_folder(src01, tmp_path / "source"), R.save_folder(new01, tmp_path / "samples")
    ctx = _Ctx(new_dir, src_dir, text)

    acc = M.prompt_accuracy(ctx)
    pred_new, pred_src = M.judge_images(M.load_folder(new_dir)), M.judge_images(M.load_folder(src_dir))
    hit = np.ones(len(z), bool)
    for attr, value in spec.items():
        hit &= pred_new[attr].numpy() == W.VOCAB[attr].index(value)
    assert acc["pocket/prompt_accuracy"] == pytest.approx(hit.mean(), abs=1e-7)
    assert acc["pocket/prompt_accuracy"] > 0.85          # the judge reads clean world images at >= 0.97
    assert M.accuracy_of(pred_src, text)["pocket/prompt_accuracy"] == 0.0     # circles are no stars

    keep = M.attribute_preservation(ctx)
    size_same = pred_src["size"].numpy() == pred_new["size"].numpy()          # size is the only unprompted one
    assert set(k for k in keep if k.startswith("pocket/keep_")) == {"pocket/keep_size"}
    assert keep["pocket/preservation"] == pytest.approx(size_same.mean(), abs=1e-7) and size_same.mean() > 0.85

    fid = M.ground_truth_fid(ctx)
    feats = M.judge_feature_array(M.load_folder(new_dir))
    target = M.judge_feature_array(M.load_folder(tmp_path / "refs" / f"attrs_{P.spec_slug(spec)}_n300_s{R.REF_SEED}"))
    source = M.judge_feature_array(M.load_folder(tmp_path / "refs" / f"source_n300_s{R.REF_SEED}"))
    assert fid["pocket/fid_gt"] == pytest.approx(_frechet64(feats, target), rel=1e-3, abs=1e-2)
    assert fid["pocket/fid_source"] == pytest.approx(_frechet64(feats, source), rel=1e-3, abs=1e-2)
    assert fid["pocket/fid_gt"] * 5 < fid["pocket/fid_source"]      # the perfect adaptation sits at the target
