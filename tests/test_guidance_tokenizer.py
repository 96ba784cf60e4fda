"""Offline CLIP tokenizer: ids equal SD's, round trip through save_pretrained, broken-tokenizer guard."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from trainables.frozen.tokenizer import BrokenTokenizerError, build_clip_tokenizer, check_tokenizer

SD_IDS = [49406, 320, 736, 3999, 525, 320, 1449, 5994, 49407]   # SD / openai CLIP-L tokenizer output


@pytest.fixture(scope="module")
def tok():
    return build_clip_tokenizer()


def test_ids_match_stable_diffusion(tok):
    assert tok.vocab_size == 49408
    assert tok.model_max_length == 77
    assert tok("a red square on a black background").input_ids == SD_IDS


def test_ids_match_open_clip_and_pad_with_eos(tok):
    import open_clip

    text = "Pixar render, unreal engine cinematic smooth, intricate detail"
    ours = tok(text, padding="max_length", max_length=77, truncation=True).input_ids
    theirs = open_clip.tokenize([text])[0].tolist()
    n = theirs.index(49407) + 1
    assert ours[:n] == theirs[:n]
    assert all(i == 49407 for i in ours[n:])      # transformers pads with eos, open_clip with 0
    assert len(ours) == 77


def test_save_and_reload(tmp_path, tok):
    from transformers import CLIPTokenizer

    build_clip_tokenizer(tmp_path)
    assert (tmp_path / "vocab.json").is_file() and (tmp_path / "merges.txt").is_file()
    again = CLIPTokenizer.from_pretrained(tmp_path)
    check_tokenizer(again, str(tmp_path))
    assert again("a red square on a black background").input_ids == SD_IDS
    assert again.model_max_length == 77


def test_broken_offline_tokenizer_is_rejected(empty_model_caches):
    from transformers import CLIPTokenizer

    # transformers 5.x offline: returns a tokenizer with vocab_size 2 instead of raising
    broken = CLIPTokenizer.from_pretrained("openai/clip-vit-large-patch14")
    with pytest.raises(BrokenTokenizerError, match="vocab_size=2"):
        check_tokenizer(broken, "openai/clip-vit-large-patch14")
