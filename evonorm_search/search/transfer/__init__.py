"""Transfer: layers trained from scratch on networks bigger than the proxies that chose them,
on shared seeds, judged on data that chose nothing.

``transfer NAME`` takes the search's best layers after re-evaluation (``--top K``, FEC
twins collapsed; see ``reevaluate``), the zoo's layers trained on its protocol (the
references; ``--zoo`` names some) and any layer named with ``--layer`` (a zoo name, a
candidate id, or a formula: one that no candidate of the search computes is stored as a
candidate with status ``named``, outside the search's funnel), and trains each on the
space's ``[transfer]`` networks (``resnet20`` for images: full resolution, every
normalization site replaced).
This tests transfer across scale within a family of networks, not across families.

- **Seeds.** Seeds 1..S fix the initial weights and the data order alike for every layer,
  so layers are compared pairwise.  With ``learning_rates`` each layer first trains once
  per rate at seed 0 (not a reported seed) and keeps, per network, the best on
  transfer-validation: one rate tuned for BatchNorm is a confound for a layer that rescales.
- **Splits.** Training reads only the dataset's ``train`` split.  The learning curve and
  every choice (the rate, the comparator) use transfer-validation; transfer-test is read
  once per run, for the final table (and CIFAR-10's ``test_batch`` beside it, where present).
- **Storage.** Every finished run is at once an evaluation with stage ``transfer`` of the
  layer's candidate (``architecture``: the network; ``accuracy``: transfer-validation;
  ``figures``: the phase, the learning rate, the curve, transfer-test and test figures, the
  settings' key).  A run's state goes to the database every ``checkpoint_minutes`` (through
  the driver: workers never write), so a session that ends loses minutes, not the run; a
  rerun trains only the runs that are missing, each from its checkpoint.  Settings that
  differ from a layer's earlier transfer are refused before anything trains (more seeds
  are not a change: only the new ones are trained).
- **The search's transfer.** The layers transferred for a search, its settings and its
  comparator are kept in the search's config (``transfer``), growing with every command;
  ``stored_transfer`` reads them back, so the command's JSON, ``report`` and the dashboard
  show the same transfer.
"""

from evonorm_search.search.transfer.plan import (
    STAGE,
    TRANSFER_KEY,
    TransferLayer,
    TransferPlan,
    plan_transfer,
    record_plan,
    transfer_settings,
)
from evonorm_search.search.transfer.results import (
    comparison_table,
    stored_transfer,
    transfer_results,
    transfer_table,
)
from evonorm_search.search.transfer.run import run_transfer
from evonorm_search.search.transfer.worker import transfer_trial

__all__ = [
    "STAGE",
    "TRANSFER_KEY",
    "TransferLayer",
    "TransferPlan",
    "comparison_table",
    "plan_transfer",
    "record_plan",
    "run_transfer",
    "stored_transfer",
    "transfer_results",
    "transfer_settings",
    "transfer_table",
    "transfer_trial",
]
