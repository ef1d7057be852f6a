"""Template-owned node runtime. ``copier update`` refreshes this package: do not edit it here."""
