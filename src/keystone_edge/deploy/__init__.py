"""Deployments: the document (:mod:`.document`), version resolution (:mod:`.resolve`), what
changes (:mod:`.diff`), the engine (:mod:`.engine`) and crash recovery (:mod:`.recovery`).

Nothing is re-exported here on purpose: importing the engine must not load the resolver
(and semantic_version with it), which an idle agent never needs.
"""
