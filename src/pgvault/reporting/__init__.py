"""Reports over a vault's history: failures recorded as objects, statistics, cost, a chart."""
