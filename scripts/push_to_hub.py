"""Uploads a trained model folder to the Hub as a self-contained repo: weights, config with remote code
(`trust_remote_code=True`), the translation pipeline, tokenizer, generation config and model card.

    python scripts/push_to_hub.py runs/tiny-en-de/averaged --repo_id USER/transformer-tiny-multi30k-en-de
    python scripts/push_to_hub.py runs/tiny-en-de/averaged --repo_id USER/NAME --dry_run /tmp/upload  # no upload
"""

import argparse
import logging
import tempfile
from pathlib import Path

from huggingface_hub import HfApi

from hf_vanilla_transformer.cli import export_model_folder, setup_logging

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> Path | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", help="A saved model folder with its tokenizer (and results.json, if scored).")
    parser.add_argument("--repo_id", required=True, help="Hub repository, USER/NAME.")
    parser.add_argument("--dry_run", metavar="DIR", help="Write the folder that would be uploaded to DIR, and stop.")
    parser.add_argument("--private", action="store_true", help="Create the repository as private.")
    parser.add_argument("--commit_message", default="Upload Transformer (Vaswani et al., 2017) model")
    args = parser.parse_args(argv)
    setup_logging()
    if args.dry_run:
        files = export_model_folder(args.model_dir, args.dry_run, name=args.repo_id)
        logger.info("Dry run: %s holds what would go to %s: %s", args.dry_run, args.repo_id, ", ".join(files))
        return Path(args.dry_run)
    with tempfile.TemporaryDirectory() as folder:
        files = export_model_folder(args.model_dir, folder, name=args.repo_id)
        api = HfApi()
        api.create_repo(args.repo_id, private=args.private, exist_ok=True)
        api.upload_folder(folder_path=folder, repo_id=args.repo_id, commit_message=args.commit_message)
    logger.info("Uploaded %s to https://huggingface.co/%s", ", ".join(files), args.repo_id)
    return None


if __name__ == "__main__":
    main()
