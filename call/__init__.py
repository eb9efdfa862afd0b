"""`python -m call`: the two-way face call command (a sender half and a receiver half on one
peer connection).  What the live ends share is in `live`; the halves are `sender` and
`receiver`.
"""
