"""CLIP BPE tokenizer built offline from open_clip's bundled vocabulary.

transformers 5.x returns a silently broken tokenizer (vocab_size 2) when `CLIPTokenizer.from_pretrained`
runs offline without cached files. open_clip ships the same byte-level BPE that OpenAI CLIP and Stable
Diffusion use (`bpe_simple_vocab_16e6.txt.gz`), so the vocabulary can be rebuilt locally:
    vocab = 256 byte symbols + their `</w>` forms + every merge joined + <|startoftext|>, <|endoftext|>
which gives 49408 entries and ids identical to SD's tokenizer (bos 49406, eos/pad 49407).
"""
from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path

CLIP_VOCAB_SIZE = 49408          # 2 * 256 byte symbols + 48894 merges + 2 specials
CLIP_MAX_LENGTH = 77             # SD / CLIP text context
_N_MERGES = 49152 - 256 - 2      # merges used by CLIP (the file holds more)
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


class BrokenTokenizerError(RuntimeError):
    """A tokenizer loaded without its vocabulary (transformers' offline failure mode)."""


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2/CLIP reversible byte -> printable unicode map (same order as CLIP's vocabulary).
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def clip_bpe_vocab_and_merges(bpe_path: str | Path | None = None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(token -> id, merges) from a CLIP BPE merges file (default: open_clip's bundled one); fresh copies."""
    vocab, merges = _read_bpe(None if bpe_path is None else str(bpe_path))
    return dict(vocab), list(merges)


@lru_cache(maxsize=4)
def _read_bpe(bpe_path: str | None) -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    if bpe_path is None:
        from open_clip.tokenizer import default_bpe  # late: open_clip ~4 s; see clip_models.py

        bpe_path = default_bpe()
    with gzip.open(bpe_path, "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : _N_MERGES + 1]]
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [BOS, EOS]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    assert len(vocab) == CLIP_VOCAB_SIZE, f"CLIP vocabulary has {len(vocab)} entries, expected {CLIP_VOCAB_SIZE}"
    return vocab, tuple(merges)


def build_clip_tokenizer(save_dir: str | Path | None = None, bpe_path: str | Path | None = None,
                         pad_token: str = EOS):
    """A `transformers.CLIPTokenizer` equal to SD's / OpenAI CLIP's, built without network access.

    `save_dir`: when given, `save_pretrained` there (a loadable `tokenizer/` folder of a diffusers layout).
    `pad_token`: SD's and SDXL's first tokenizer pad with <|endoftext|>; SDXL's tokenizer_2 pads with "!".
    """
    from transformers import CLIPTokenizer  # late: ~0.7 s to import; only building a tokenizer needs it

    vocab, merges = clip_bpe_vocab_and_merges(bpe_path)
    tok = CLIPTokenizer(
        vocab=vocab,
        merges=list(merges),
        unk_token=EOS,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=pad_token,
        model_max_length=CLIP_MAX_LENGTH,
    )
    check_tokenizer(tok, "build_clip_tokenizer (open_clip bundled BPE)")
    if save_dir is not None:
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        tok.save_pretrained(str(save_dir))
        # also the classic files, so older transformers / the slow tokenizer load the folder too
        (Path(save_dir) / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        (Path(save_dir) / "merges.txt").write_text(
            "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")
    return tok


def check_tokenizer(tok, where: str) -> None:
    """Raise if `tok` is transformers' silently broken offline tokenizer (vocab_size <= 2)."""
    size = getattr(tok, "vocab_size", None)
    if size is None or size <= 2:
        raise BrokenTokenizerError(
            f"tokenizer from {where} has vocab_size={size}: its vocabulary files were not loaded "
            "(transformers returns such a tokenizer offline instead of raising). Point the reference at a "
            "directory with vocab.json/merges.txt (or tokenizer.json), download it first "
            "(`hf download <repo>`), or build one offline with "
            "`trainables.frozen.tokenizer.build_clip_tokenizer(save_dir)`."
        )
