"""Asset forwarding: which events go where (routes, the plan) and what is sent (payload).

Pure, except ``plan.build_forwarding_plan``, which reads the options.
"""
