"""Data: uBench rows from the Hub, a local copy or the bundled sample (`sources`), turned into
multiple-choice items (`items`), their images encoded once (`images`), options reordered on request."""
