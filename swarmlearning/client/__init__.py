"""HPE Swarm Learning's client package: `swarmlearning.client.swarm` holds the extension API."""
