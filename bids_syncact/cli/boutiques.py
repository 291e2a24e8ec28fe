"""The Boutiques descriptor of ``bids-syncact``, made from the argument parser.

``python -m bids_syncact.cli.boutiques [FILE]`` writes it (``make boutiques`` refreshes the
committed ``boutiques.json``; the Dockerfile writes ``/opt/bids-syncact/boutiques.json`` with the
image's version). Made from
:func:`~bids_syncact.cli.parser.build_parser`, it cannot drift from the command line; tests check
it against the parser and with ``bosh validate --bids`` and ``bosh exec simulate``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bids_syncact import __version__
from bids_syncact.cli.parser import SyncActArgumentParser, build_parser

#: Options whose value is a folder the app creates or fills: a String, not an existing File.
WRITTEN_FOLDERS = {'work_dir', 'bids_database_dir'}
#: The BIDS-App order of the first value keys (boutiques' --bids check).
BIDS_APP_KEYS = ('participant_label', 'session_label')
VERBOSITY_CHOICES = ['-v', '-vv', '-vvv']


def build_descriptor(
    parser: SyncActArgumentParser | None = None, *, version: str = __version__
) -> dict[str, Any]:
    """Return the Boutiques descriptor (schema 0.5) of the parser's command line."""
    parser = parser or build_parser()
    options = [
        a for a in parser._actions if a.option_strings and a.dest not in ('help', 'version')
    ]
    options.sort(key=lambda a: (a.dest not in BIDS_APP_KEYS, BIDS_APP_KEYS.index(a.dest)
                                if a.dest in BIDS_APP_KEYS else 0))  # fmt: skip
    inputs = [
        {'id': 'bids_dir', 'name': 'BIDS dataset', 'type': 'File', 'value-key': '[BIDS_DIR]',
         'optional': False, 'description': 'The raw BIDS dataset (read only).'},
        {'id': 'output_dir_name', 'name': 'Output directory name', 'type': 'String',
         'value-key': '[OUTPUT_DIR]', 'optional': True,
         'description': 'Where the BIDS derivatives go (participant level).'},
        {'id': 'participant_level_analysis_dir', 'name': 'Participant-level outputs',
         'type': 'File', 'value-key': '[OUTPUT_DIR]', 'optional': True,
         'description': 'The outputs of the participant level (group level).'},
        {'id': 'analysis_level', 'name': 'Analysis level', 'type': 'String',
         'value-key': '[ANALYSIS_LEVEL]', 'optional': False,
         'value-choices': ['participant', 'group'],
         'description': 'participant: per-subject maps; group: statistics over participants.'},
    ]  # fmt: skip
    inputs += [_input(action) for action in options]
    keys = ' '.join(i['value-key'] for i in inputs[3:])
    return {
        'name': 'bids-syncact',
        'tool-version': version,
        'description': parser.description,
        'author': 'The bids-syncact developers',
        'url': 'https://github.com/bids-syncact/bids-syncact',
        'command-line': f'mkdir -p [OUTPUT_DIR]; bids-syncact [BIDS_DIR] [OUTPUT_DIR] {keys}',
        'schema-version': '0.5',
        'container-image': {'type': 'docker',
                            'image': f'localhost/bids-syncact:{docker_tag(version)}'},
        'inputs': inputs,
        'output-files': [{
            'id': 'output_dir', 'name': 'Output directory', 'path-template': '[OUTPUT_DIR]',
            'optional': False, 'description': 'BIDS derivatives of bids-syncact.',
        }],
        'groups': [{
            'id': 'output_directory', 'name': 'Output directory',
            'members': ['output_dir_name', 'participant_level_analysis_dir'],
            'mutually-exclusive': True, 'one-is-required': True,
            'description': 'A folder name (participant level) or participant outputs (group).',
        }],
        'tags': {'domain': ['neuroinformatics', 'fmri', 'bids'], 'bids-app': True},
    }  # fmt: skip


def docker_tag(version: str) -> str:
    """Turn a PEP 440 version into a Docker tag (``+`` is not allowed in tags).

    >>> docker_tag('0.1.1.dev3+g1a2b3c')
    '0.1.1.dev3-g1a2b3c'
    """
    return version.replace('+', '-')


def _input(action: argparse.Action) -> dict[str, Any]:
    entry: dict[str, Any] = {
        'id': action.dest,
        'name': action.dest.replace('_', ' ').capitalize(),
        'value-key': f'[{action.dest.upper()}]',
        'optional': True,
        'description': ' '.join(str(action.help or '').replace('%%', '%').split()),
    }
    if isinstance(action, argparse._CountAction):  # -v, -vv, -vvv: a choice of flags
        return entry | {'type': 'String', 'value-choices': VERBOSITY_CHOICES}
    entry['command-line-flag'] = _flag(action)
    if action.nargs == 0:
        return entry | {'type': 'Flag'}
    if action.choices:
        entry |= {'type': 'String', 'value-choices': list(action.choices)}
    elif action.type is Path:
        entry['type'] = 'String' if action.dest in WRITTEN_FOLDERS else 'File'
    elif getattr(action.type, '__name__', '') == 'integer':
        entry |= {'type': 'Number', 'integer': True}
    else:
        entry['type'] = 'String'
    if action.nargs == '+':
        entry['list'] = True
    return entry


def _flag(action: argparse.Action) -> str:
    """Return the first long flag (``--participant_label``-style aliases come second)."""
    return next(flag for flag in action.option_strings if flag.startswith('--'))


def main(argv: list[str] | None = None) -> int:
    """Write the descriptor to FILE (default: stdout)."""
    args = sys.argv[1:] if argv is None else argv
    text = json.dumps(build_descriptor(), indent=2) + '\n'
    if args:
        Path(args[0]).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == '__main__':  # pragma: no cover
    sys.exit(main())
