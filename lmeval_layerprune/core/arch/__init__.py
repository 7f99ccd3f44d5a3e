"""Per-architecture facts: discovered from the model, or looked up in a small table.

Most decoder-only families need no entry: :func:`discover` builds the model on the
``meta`` device (no memory, no weights) and finds

* the decoder stack: the one ``ModuleList`` whose length is the text config's
  ``num_hidden_layers`` (inside the language model when the config nests a ``text_config``);
* the per-layer config entries: lists with one value per layer (sliced to the kept layers);
* the attributes that carry a layer's index (``layer_idx``, ``layer_id``, ...: renumbered).

Every inferred slice is then checked structurally before it is used
(:func:`check_inferred_slice`): the model built from the pruned config must have, for each
kept layer, exactly the modules, tensor shapes and settings the original layer had, and the
same tensors outside the stack. Whatever cannot be inferred safely (a list of layer indices,
two candidate stacks, per-layer tensors outside the layers, a threshold that changes which
layers are what) is refused with :class:`UnsupportedArchitectureError`.

:data:`ARCHITECTURES` holds what discovery cannot know (and the families verified before
discovery existed). An entry says:

* ``layers``: the dotted path of the decoder-layer ``ModuleList`` inside the
  ``*ForCausalLM`` model (also the checkpoint key prefix of its tensors);
* ``lists``: config attributes holding one value per layer (sliced to the kept layers);
* ``index_lists``: config attributes holding layer *indices* (filtered and renumbered);
* ``thresholds``: config ints meaning "layers with index >= value" (recounted);
* ``sparse_step``: the config attribute of an every-k-th-layer MoE pattern, rewritten
  into an explicit ``mlp_only_layers`` list when renumbering would break it;
* ``text_config``: the attribute of a nested decoder config (multimodal checkpoints);
* ``unsupported``: why a family is refused (slicing it would be wrong).
"""

from lmeval_layerprune.core.arch.discover import discover
from lmeval_layerprune.core.arch.facts import (
    arch_for,
    check_inferred_slice,
    num_layers,
    sliced_config_values,
    text_config_of,
)
from lmeval_layerprune.core.arch.listing import arch_status, archs_listing, causal_lm_model_types, format_archs
from lmeval_layerprune.core.arch.table import ARCHITECTURES, ArchInfo, supported_model_types

__all__ = [
    "ARCHITECTURES",
    "ArchInfo",
    "arch_for",
    "arch_status",
    "archs_listing",
    "causal_lm_model_types",
    "check_inferred_slice",
    "discover",
    "format_archs",
    "num_layers",
    "sliced_config_values",
    "supported_model_types",
    "text_config_of",
]
