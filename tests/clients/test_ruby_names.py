"""Field names that Ruby can read: no generated accessor of capstan.v1 may be
a public method of every Ruby object (issue 10: `req.method` called
Object#method, so the field became `method_name`; DescribeDeploymentResponse's
`methods` became `callable_methods`). Ruby itself checks the committed code
(tests/clients/ruby_name_clashes.rb)."""

from __future__ import annotations

import json
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_no_field_clashes_with_ruby_object_methods() -> None:
    script = pathlib.Path(__file__).parent / "ruby_name_clashes.rb"
    command = ["ruby", "-I", str(ROOT / "clients" / "ruby" / "lib"), str(script)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [], "fields Ruby cannot read by name (rename them)"
