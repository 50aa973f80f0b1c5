"""Real datasets that a dependency ships, written out as data files for `aeserve train`."""
