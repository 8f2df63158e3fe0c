"""Unit tests of the benchmark tool: offline, standard library only
(`cd scripts && python3 -m unittest discover -s benchtool/tests -t .`)."""
