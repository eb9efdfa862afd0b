"""Everything both ends of a call must agree on: stream syntax, quantisation, prediction,
the arithmetic coder and the VVC key-frame wrapper.  No networking."""
