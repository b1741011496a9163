"""Data sources, side by side: the generated world (`sources.world`), the MovieLens adapter (`sources.movielens`),
and the validation every data set passes before the stages read it (`sources.validate`).

Built on `core` only.
"""
