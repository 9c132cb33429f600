"""Interoperability with other ecosystems' checkpoint formats.

* :mod:`groundwork.interop.hf`: Hugging Face ``transformers``, in memory and on disk, for every
  registered architecture with an adapter (GPT-2, Llama; the adapters live next to the models).
* :mod:`groundwork.interop.gguf`: Llama-architecture GGUF files (imported on demand, not here),
  read by :mod:`groundwork.interop.gguf_file` and :mod:`groundwork.interop.gguf_quants`.
"""

from groundwork.interop.hf import (
    config_from_hf_dict,
    export_hf,
    from_hf,
    gpt2_key_map,
    hf_adapter,
    hf_config_dict,
    hf_state_dict,
    import_hf,
    load_hf_state_dict,
    to_hf,
)

__all__ = [
    "config_from_hf_dict",
    "export_hf",
    "from_hf",
    "gpt2_key_map",
    "hf_adapter",
    "hf_config_dict",
    "hf_state_dict",
    "import_hf",
    "load_hf_state_dict",
    "to_hf",
]
