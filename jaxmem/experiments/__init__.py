"""Experiments: each turns specs into rows of the tidy results table, nothing else.

Two layers. The base layer, which any experiment may import: :mod:`.probing` (the engine glue:
``fit_and_score``, ``probe_members``, ``probe_rows``), :mod:`.activations` (activation files),
:mod:`.distributed` (probing on a mesh), :mod:`.trained` (a trained run opened once: ``open_run``,
``TrainedRun``) and :mod:`.finetuning` (the test split, the layer choice and the early-stopped fine-tuning). The
stages on top (:mod:`.memorize`, :mod:`.dynamics`, :mod:`.relabel`, :mod:`.labels`, :mod:`.cost`, :mod:`.sweep`)
import only the base layer, never each other (tests/test_trained.py holds this); what two stages share goes
down into the base layer or into :mod:`jaxmem.train`.
"""
