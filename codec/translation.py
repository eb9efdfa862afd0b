"""The translator choices of a decoder whose feature format differs from the stream's.

Light on purpose (the command line builds its options from it without loading a model):
the translators themselves are models.translators.  Which method is the default is measured
there (`geometry` through the shared face geometry, `learned` through a small network).
"""

from __future__ import annotations

TRANSLATOR_METHODS = ("geometry", "learned")
DEFAULT_TRANSLATOR = "geometry"
