"""Tests of the Copier template (copier.yml, extensions/, template/)."""
