"""Convert a saved model folder to CTranslate2.

    python scripts/export_ctranslate2.py MODEL_DIR OUT_DIR [--quantization int8] [--force]

See `hf_vanilla_transformer.export_ctranslate2` (needs `pip install ctranslate2`).
"""

from hf_vanilla_transformer.export_ctranslate2 import main

if __name__ == "__main__":
    main()
