"""A "translation" pipeline for encoder-decoder models.

transformers 5 removed its `translation` and `text2text-generation` pipelines; this one gives their v4 output
(`[{"translation_text": ...}]` per input). It ships inside saved model folders as remote code (config.json
`custom_pipelines`), so it imports only torch and transformers.
"""

import torch
from transformers import Pipeline
from transformers.utils import ModelOutput


class TranslationPipeline(Pipeline):
    """Translates a string or a list of strings with `model.generate`; generation kwargs pass through.

    `pipe("a man")` returns `[{"translation_text": ...}]`; `pipe(["a", "b"], batch_size=2)` returns one dict per
    input (one list of dicts per input when `num_return_sequences` > 1), as the v4 pipeline did.
    """

    _pipeline_calls_generate = True
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.model.config.is_encoder_decoder:
            raise ValueError(
                f"TranslationPipeline needs an encoder-decoder model, got {type(self.model).__name__} "
                "whose config has is_encoder_decoder=False."
            )

    def _sanitize_parameters(self, truncation: bool | None = None, **generate_kwargs):
        preprocess_params = {} if truncation is None else {"truncation": truncation}
        return preprocess_params, generate_kwargs, {}

    def __call__(self, inputs: str | list[str], **kwargs):
        """Translates `inputs`; `batch_size`, `truncation` and any `generate()` kwargs may be given."""
        if isinstance(inputs, list) and not inputs:
            return []
        results = super().__call__(inputs, **kwargs)
        if isinstance(inputs, list) and all(len(result) == 1 for result in results):
            return [result[0] for result in results]
        return results

    def preprocess(self, text: str, truncation: bool = False) -> dict[str, torch.Tensor]:
        if not isinstance(text, str):
            raise ValueError(f"TranslationPipeline expects a string or a list of strings, got {type(text).__name__}.")
        return self.tokenizer(text, truncation=truncation, return_tensors="pt")

    def _forward(self, model_inputs: dict[str, torch.Tensor], **generate_kwargs) -> dict[str, torch.Tensor]:
        in_batch = model_inputs["input_ids"].shape[0]
        output = self.model.generate(**model_inputs, **self._prepare_generate_kwargs(generate_kwargs))
        # A generation config may ask for a ModelOutput; only the tokens are needed here.
        sequences = output.sequences if isinstance(output, ModelOutput) else output
        # (B * num_return_sequences, T) -> (B, num_return_sequences, T), so the pipeline splits per input
        return {"output_ids": sequences.reshape(in_batch, -1, sequences.shape[-1])}

    def postprocess(self, model_outputs: dict[str, torch.Tensor]) -> list[dict[str, str]]:
        texts = self.tokenizer.batch_decode(model_outputs["output_ids"][0], skip_special_tokens=True)
        return [{"translation_text": text} for text in texts]


__all__ = ["TranslationPipeline"]
