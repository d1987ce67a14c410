"""The intake spine: drafts, cases, their timeline and the notices they drive."""
