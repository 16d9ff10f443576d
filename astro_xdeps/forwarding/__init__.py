"""Asset forwarding: which events go where (routes) and what is sent (payload). Pure."""
