/// Demand: the sources that tell the leader how much of each service is wanted.
