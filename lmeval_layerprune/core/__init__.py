"""Grammar, records, architectures, slicing and file safety: the layer everything else stands on."""
