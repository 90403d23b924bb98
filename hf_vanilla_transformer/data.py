"""Parallel corpora as `datasets.DatasetDict`s: loading (local Multi30k-style files or the Hub) and tokenisation.

Every split comes out with two string columns named by their language codes (e.g. ``en`` and ``de``), whichever
source it was read from, so the rest of the recipe never looks at file layouts again.

Line policy for local files (kept identical on both sides so that pairs stay aligned):
- Lines are split on ``"\\n"`` only; a ``"\\r"`` right before it (a CRLF line end) is part of the line end and dropped.
  Any other ``"\\r"``, and every other character (tabs, edge spaces, form feeds, U+2028), stays in the line, because
  ``str.splitlines`` would break lines on those and silently misalign the two sides.
- The final line end is optional: ``"a\\nb"`` and ``"a\\nb\\n"`` both give ``["a", "b"]``.
- Empty lines are kept as ``""`` (dropping one would shift every later pair); filter them after tokenisation.
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Sequence
from pathlib import Path

import datasets

# SPLIT.LANG, SPLIT.LANG.gz, and SPLIT.TAG[.TAG...].LANG[.gz] (Multi30k's tok/ files: SPLIT.lc.norm.tok.LANG.gz).
_CORPUS_FILE = re.compile(r"^(?P<split>[^.]+)(?:\.[^.]+)*?\.(?P<lang>[^.]+?)(?:\.gz)?$")


def load_parallel_corpus(
    source: str | Path,
    src_lang: str,
    tgt_lang: str,
    splits: Sequence[str] | None = None,
    config_name: str | None = None,
) -> datasets.DatasetDict:
    """Load a parallel corpus as a DatasetDict whose splits have the string columns ``src_lang`` and ``tgt_lang``.

    ``source`` is a local directory of ``SPLIT[.TAGS].LANG[.gz]`` files (a ``Path``, or a string naming an existing
    directory or starting with ``/``, ``.`` or ``~``) or else a Hub dataset name, loaded with
    ``datasets.load_dataset(source, config_name)``; its splits may have plain per-language columns
    (``bentrevett/multi30k``) or a ``translation`` dict column (``wmt14``, ``config_name="de-en"``).
    ``splits=None`` loads every split that has both languages; named splits must all exist.
    """
    if not isinstance(src_lang, str) or not isinstance(tgt_lang, str) or not src_lang or not tgt_lang:
        raise ValueError(f"src_lang and tgt_lang must be non-empty language codes, got {src_lang!r} and {tgt_lang!r}")
    if src_lang == tgt_lang:
        raise ValueError(f"src_lang and tgt_lang must differ, both are {src_lang!r}")
    if splits is not None:
        if isinstance(splits, str) or not splits:
            raise ValueError(f"splits must be a non-empty sequence of split names or None, got {splits!r}")
        splits = list(dict.fromkeys(splits))
    if _is_local(source):
        if config_name is not None:
            raise ValueError(f"config_name is for Hub datasets only, got {config_name!r} with directory {source}")
        return _load_local(Path(source).expanduser(), src_lang, tgt_lang, splits)
    return _load_hub(str(source), config_name, src_lang, tgt_lang, splits)


def _is_local(source: str | Path) -> bool:
    if isinstance(source, Path):
        return True
    return Path(source).expanduser().is_dir() or source.startswith(("/", ".", "~"))


def _load_local(directory: Path, src_lang: str, tgt_lang: str, splits: list[str] | None) -> datasets.DatasetDict:
    if not directory.is_dir():
        raise FileNotFoundError(f"corpus directory {directory} does not exist or is not a directory")
    files = _index_corpus_files(directory)
    languages = sorted({lang for langs in files.values() for lang in langs})
    for lang in (src_lang, tgt_lang):
        if lang not in languages:
            raise ValueError(
                f"unknown language code {lang!r}: no SPLIT.{lang}[.gz] files in {directory} "
                f"(languages there: {', '.join(languages) or 'none'})"
            )
    if splits is None:
        splits = sorted(s for s, langs in files.items() if src_lang in langs and tgt_lang in langs)
        if not splits:
            raise ValueError(f"no split in {directory} has both {src_lang!r} and {tgt_lang!r} files")
    # Check every requested file exists before reading any (train files are large).
    for split in splits:
        if split not in files:
            raise ValueError(f"no split {split!r} in {directory} (available: {', '.join(sorted(files))})")
        for lang in (src_lang, tgt_lang):
            if lang not in files[split]:
                raise ValueError(
                    f"split {split!r} in {directory} has no {lang!r} file "
                    f"(languages of that split: {', '.join(sorted(files[split]))})"
                )
    corpus = {}
    for split in splits:
        src_file, tgt_file = files[split][src_lang], files[split][tgt_lang]
        src_lines, tgt_lines = _read_lines(src_file), _read_lines(tgt_file)
        if len(src_lines) != len(tgt_lines):
            raise ValueError(
                f"split {split!r} is misaligned: {src_file} has {len(src_lines)} lines "
                f"but {tgt_file} has {len(tgt_lines)}"
            )
        corpus[split] = datasets.Dataset.from_dict(
            {src_lang: src_lines, tgt_lang: tgt_lines},
            features=datasets.Features({src_lang: datasets.Value("string"), tgt_lang: datasets.Value("string")}),
        )
    return datasets.DatasetDict(corpus)


def _index_corpus_files(directory: Path) -> dict[str, dict[str, Path]]:
    """Map split -> language -> file, keeping only splits with two or more languages (so README.md is no split)."""
    files: dict[str, dict[str, Path]] = {}
    for path in sorted(directory.iterdir()):
        match = _CORPUS_FILE.match(path.name)
        if not path.is_file() or match is None or match["lang"] == "gz":
            continue
        split, lang = match["split"], match["lang"]
        other = files.setdefault(split, {}).get(lang)
        if other is not None:
            raise ValueError(f"both {other} and {path} hold split {split!r} in {lang!r}; keep only one")
        files[split][lang] = path
    return {split: langs for split, langs in files.items() if len(langs) >= 2}


def decode_utf8(raw: bytes, name: str | Path) -> str:
    """`raw` decoded strictly as UTF-8, or a ValueError naming `name` and the line of the first bad byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise ValueError(
            f"{name} is not valid UTF-8: line {line} has the byte(s) {raw[err.start : err.end]!r}"
        ) from err


def _read_lines(path: Path) -> list[str]:
    """Read a plain or gzip UTF-8 file strictly, following the module's line policy."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise ValueError(f"{path} is not a readable gzip file ({err})") from err
    return split_lines(decode_utf8(raw, path))


def split_lines(text: str) -> list[str]:
    """The lines of `text` by the line policy of this module's docstring (also for scripts/translate.py)."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def _load_hub(
    name: str, config_name: str | None, src_lang: str, tgt_lang: str, splits: list[str] | None
) -> datasets.DatasetDict:
    loaded = datasets.load_dataset(name, config_name)
    if splits is None:
        splits = list(loaded)
    corpus = {}
    for split in splits:
        if split not in loaded:
            raise ValueError(f"no split {split!r} in Hub dataset {name} (available: {', '.join(loaded)})")
        ds = loaded[split]
        # wmt14-style rows {"translation": {"de": ..., "en": ...}}: flattening is a column-level Arrow operation.
        if "translation" in ds.column_names and isinstance(ds.features["translation"], dict | datasets.Translation):
            ds = ds.flatten()
            ds = ds.rename_columns({c: c.removeprefix("translation.") for c in ds.column_names})
        languages = [c for c, f in ds.features.items() if getattr(f, "dtype", None) in ("string", "large_string")]
        for lang in (src_lang, tgt_lang):
            if lang not in languages:
                raise ValueError(
                    f"unknown language code {lang!r}: split {split!r} of Hub dataset {name} has no such text "
                    f"column (available: {', '.join(languages) or 'none'})"
                )
        corpus[split] = ds.select_columns([src_lang, tgt_lang])
    return datasets.DatasetDict(corpus)


def tokenize_corpus(
    dataset: datasets.DatasetDict,
    tokenizer,
    src_lang: str,
    tgt_lang: str,
    max_length: int | None = None,
    num_proc: int | None = None,
) -> datasets.DatasetDict:
    """Tokenise each split into ``input_ids``, ``attention_mask``, ``labels`` and the lengths ``src_len``/``tgt_len``.

    ``max_length`` truncates both sides (special tokens included); ``None`` keeps every sequence whole. The lengths
    cost one ``len`` per row in the same batched pass and feed the token-budget sampler and length filters.
    """
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1):
        raise ValueError(f"max_length must be a positive int or None, got {max_length!r}")
    for split, ds in dataset.items():
        missing = [lang for lang in (src_lang, tgt_lang) if lang not in ds.column_names]
        if missing:
            raise ValueError(
                f"split {split!r} has no column(s) {', '.join(map(repr, missing))} (columns: {ds.column_names})"
            )
    # The decoder learns to stop only if every target ends with eos; a tokenizer without that post-processor
    # would train a model that never ends its translations.
    probe = tokenizer(text_target="a")["input_ids"]
    if tokenizer.eos_token_id is None or not probe or probe[-1] != tokenizer.eos_token_id:
        raise ValueError(
            f"tokenizer must append eos_token ({tokenizer.eos_token!r}) to every sequence; it encodes 'a' as {probe}"
        )

    def encode(batch: dict[str, list[str]]) -> dict[str, list]:
        enc = tokenizer(
            batch[src_lang],
            text_target=batch[tgt_lang],
            truncation=max_length is not None,
            max_length=max_length,
            return_attention_mask=True,
            return_token_type_ids=False,
        )
        return {
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "labels": enc["labels"],
            "src_len": [len(ids) for ids in enc["input_ids"]],
            "tgt_len": [len(ids) for ids in enc["labels"]],
        }

    return dataset.map(
        encode,
        batched=True,
        num_proc=num_proc,
        remove_columns=[src_lang, tgt_lang],
        desc=f"Tokenising {src_lang}->{tgt_lang}",
    )


__all__ = ["decode_utf8", "load_parallel_corpus", "split_lines", "tokenize_corpus"]
