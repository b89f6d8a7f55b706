"""`make demo` / `python -m demo`: back up a (sandbox) cluster to S3, break it, restore it, prove nothing was lost."""
