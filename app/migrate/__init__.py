"""Moving jobs into jobgate from other queues: `bull` reads Bull/BullMQ in Redis,
`service` maps and submits them through the gateway (`jobgate migrate bull`)."""
