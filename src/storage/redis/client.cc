// Placeholder: the Redis client.
