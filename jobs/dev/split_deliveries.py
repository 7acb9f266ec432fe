"""Cut one raw clickstream into one delivery a day, for replaying nights (the backtest).

    spark-submit jobs/dev/split_deliveries.py --input RAW --out OUT/raw --preset taobao

Reads RAW with the source mapping, as ingest reads it, and writes each row, unchanged (every
column as read, in the source's format: CSV with the same separator and header, or Parquet), to
`OUT/dt=D/` where D is the UTC date of its timestamp. A row whose timestamp does not parse or
lies outside the mapping's sane window goes to a day picked by a hash of the row among the days
found: every delivery carries its share of the dirt, which ingest then quarantines.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pyspark.sql import functions as F

from jobs.common.spark import get_spark
from jobs.common.timeutil import utc
from jobs.ingest import read_raw, with_parsed_ts
from jobs.sources import load_mapping


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--preset", default="")
    ap.add_argument("--mapping", help="JSON file of SourceMapping keys over the preset")
    args = ap.parse_args(argv)
    mapping = load_mapping(args.preset or None, args.mapping)
    spark = get_spark("split_deliveries")
    raw = read_raw(spark, args.input, mapping)
    columns = raw.columns
    parsed = with_parsed_ts(raw, mapping.ts_col, mapping.ts_unit, "_split_ts")
    lo, hi = utc(mapping.min_ts), utc(mapping.max_ts)
    sane = (F.col("_split_ts") >= F.lit(lo)) & (F.col("_split_ts") < F.lit(hi))
    day = F.when(sane, F.to_date(F.col("_split_ts")))
    tagged = parsed.withColumn("_split_day", day)
    days = sorted(r[0] for r in tagged.select("_split_day").distinct().collect() if r[0])
    if not days:
        print(f"{args.input}: no row with a timestamp in the sane window", file=sys.stderr)
        return 2
    picks = F.array(*[F.lit(str(d)) for d in days])
    spread = F.element_at(
        picks,
        ((F.abs(F.xxhash64(*[F.col(f"`{c}`") for c in columns])) % len(days)) + 1).cast("int"),
    )
    out = tagged.withColumn("dt", F.coalesce(F.col("_split_day").cast("string"), spread))
    out = out.select(*[F.col(f"`{c}`") for c in columns], "dt").repartition("dt")
    writer = out.write.mode("overwrite").partitionBy("dt")
    if mapping.format == "parquet":
        writer.parquet(args.out)
    else:
        writer.option("sep", mapping.sep).option("header", mapping.header).csv(args.out)
    print(f"{len(days)} deliveries {days[0]} .. {days[-1]} in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
