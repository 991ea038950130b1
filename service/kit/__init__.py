"""Shared plumbing, no business rules: database, problems, paging, observability, HTTP."""
