"""The course machinery, apart from the science: what notebooks call and how they are built,
run and graded.

- :mod:`.setup`: the first cell of every notebook (device, branch, model, seed);
- :mod:`.api`: ``check`` and ``claim``; :mod:`.judge`: the one judge of an exercise,
  used by ``check`` and by the re-test; :mod:`.compare`: comparing answers;
- :mod:`.checks`: the registry of exercises, one module per lesson;
- :mod:`.grade` and :mod:`.retest`: ``endorm-mini grade``;
- :mod:`.cells`, :mod:`.build`, :mod:`.workspace`, :mod:`.nbrun`, :mod:`.widget_state`,
  :mod:`.needs`: reading, building, copying and running notebooks; ``%%needs``;
- :mod:`.paper`, :mod:`.project`: where the notes and the repository are;
- :mod:`.offline`: stand-ins for the hub's models and data, to rehearse the GPU branch.

Notebooks import from :mod:`endorm_mini.grading`, a short re-export of :mod:`.api` and
:mod:`.setup`.
"""
