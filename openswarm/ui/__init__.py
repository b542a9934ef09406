"""The dashboard (`openswarm ui`): the swarm, its contracts, its ledger and its experiments,
live in a browser."""
