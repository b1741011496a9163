"""spark-submit entry for the Spark stages: `spark-submit [options] scripts/sail_spark.py SUBCOMMAND [args]`.

Runs `sail SUBCOMMAND` in the Spark driver (mine-pairs, embed --engine spark, build-ranking-data). Pass
`--master ''` to the subcommand so it uses the master spark-submit was given. On a cluster, ship the code to the
executors with `--py-files sail.zip` (see docs/CLUSTER.md).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
