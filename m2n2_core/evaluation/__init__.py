"""NoC evaluation harness: clicker, metrics, dataset readers, baselines, runner, plot and the `eval` CLI."""
