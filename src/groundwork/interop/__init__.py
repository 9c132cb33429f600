"""Interoperability with other ecosystems' checkpoint formats.

* :mod:`groundwork.interop.hf`: Hugging Face ``transformers`` (GPT-2, Llama), in memory and on disk.
* :mod:`groundwork.interop.gguf`: GGUF files (imported on demand, not here).
"""

from groundwork.interop.hf import (
    config_from_hf_dict,
    export_hf,
    from_hf,
    gpt2_key_map,
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
    "hf_config_dict",
    "hf_state_dict",
    "import_hf",
    "load_hf_state_dict",
    "to_hf",
]
