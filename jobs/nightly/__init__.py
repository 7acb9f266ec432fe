"""What the DAG runs between the jobs: params -> settings (`params`), command lines
(`commands`), running a step and classifying its failure (`runner`), the pipeline's own steps
(`steps`: promotion gate, recommendations gate, publish), the serving pointer (`promote`), the
versioned publish (`publish`) and the run report (`report`)."""
