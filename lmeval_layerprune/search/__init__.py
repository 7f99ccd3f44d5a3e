"""The greedy layer search with exact early elimination, its objectives and the select command.

``protocols`` (what the loop needs: Objective, ItemObjective, SearchJournal) <- ``greedy`` (the loop)
<- ``objectives`` (tasks, perplexity; ``reuse``: hidden states within a round) <- ``select``
(SelectionSettings, select_layers; ``plot``: the plan's PNG).
"""
