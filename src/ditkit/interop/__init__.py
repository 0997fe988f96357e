"""Interoperability: diffusers DiT folders both ways, format conversion, model cards.

    from ditkit.interop import export_diffusers, import_diffusers, convert, write_model_card

* ``diffusers_dit``: ``DiTTransformer2DModel`` <-> ``DiT`` through one explicit key table, with the two
  numerics differences of diffusers' port exposed as ``DiTConfig`` options (docs/reference.md §4);
  ``diffusers_folder``: its ``save_pretrained`` folders, read and written without diffusers.
* ``convert``: reference checkpoint / diffusers folder / ditkit model folder, detected and converted.
* ``model_card``: the README.md written into every converted model folder.
* ``cli``: ``ditkit convert SRC DST --to FORMAT`` (``register(subparsers)``).

diffusers itself is optional: importing and exporting read and write the files directly.
"""

from .convert import convert, detect_format
from .diffusers_dit import from_diffusers_model, to_diffusers_model
from .diffusers_folder import export_diffusers, import_diffusers
from .model_card import write_model_card

__all__ = [
    "convert", "detect_format", "export_diffusers", "from_diffusers_model", "import_diffusers",
    "to_diffusers_model", "write_model_card",
]
