"""The greedy layer search with exact early elimination, its objectives and the select command."""
