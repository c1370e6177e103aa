"""docs/errors.md, as tests: every public entry point, the bad inputs tried,
and the exception each gets.

ROWS is the single source: each row is one test (the call is evaluated in a
namespace of fixtures built by _fixtures()), and docs/errors.md is rendered
from ROWS, so the page and the tests cannot drift (test_doc_is_current).
After editing ROWS, regenerate the page with:

    PYTHONPATH=. python tests/test_errors.py

A message pattern is the exact message, with * standing for the parts that
change from run to run (temporary paths, generated segment names).
"""
import os
import re
import sys
import tempfile
from pathlib import Path

import pytest

import fastio
from conftest import UNDER_VALGRIND

DOC = Path(__file__).resolve().parent.parent / "docs" / "errors.md"

# (entry point, bad input, call, exception type name, message pattern)
ROWS = [
    ('fastio.mmap', 'negative length', 'fastio.mmap(-1, -1)', 'OverflowError', 'memory mapped length must be positive, got length=-1'),
    ('fastio.mmap', 'zero length anonymous', 'fastio.mmap(-1, 0)', 'OSError', '[Errno 22] Invalid argument (mmap)'),
    ('fastio.mmap', 'negative offset', 'fastio.mmap(FD, 10, offset=-1)', 'OverflowError', 'memory mapped offset must be positive, got offset=-1'),
    ('fastio.mmap', 'offset past end of file', 'fastio.mmap(FD, 10, offset=1<<20)', 'ValueError', 'mmap length is greater than file size: offset=1048576 + length=10 > file size=16384'),
    ('fastio.mmap', 'bad fd', 'fastio.mmap(987654, 10)', 'OSError', '[Errno 9] Bad file descriptor (fstat)'),
    ('fastio.mmap', 'fd a str', 'fastio.mmap("x", 10)', 'FileNotFoundError', "[Errno 2] No such file or directory: 'x'"),
    ('fastio.mmap', 'length a float', 'fastio.mmap(-1, 1.5)', 'TypeError', "'float' object cannot be interpreted as an integer"),
    ('fastio.mmap', 'bad access', 'fastio.mmap(-1, 10, access=99)', 'ValueError', 'mmap invalid access parameter: access=99'),
    ('fastio.mmap', 'length past end of file', 'fastio.mmap(FD, 1<<20)', 'ValueError', 'mmap length is greater than file size: offset=0 + length=1048576 > file size=16384'),
    ('fastio.mmap', 'empty file length 0', 'fastio.mmap(EMPTYFD, 0)', 'ValueError', 'cannot mmap an empty file'),
    ('fastio.mmap', 'unknown keyword', 'fastio.mmap(-1, 10, bogus=1)', 'TypeError', "mmap.__new__() got an unexpected keyword argument 'bogus'"),
    ('fastio.mmap', 'huge length', 'fastio.mmap(-1, 1<<62)', 'OSError', '[Errno 12] Cannot allocate memory (mmap)'),
    ('mmap[i]', 'index out of range', 'M[10**6]', 'IndexError', 'mmap index out of range: index=1000000, length=4096'),
    ('mmap[i]', 'negative index out of range', 'M[-10**6]', 'IndexError', 'mmap index out of range: index=-1000000, length=4096'),
    ('mmap[i]', 'index a str', 'M["a"]', 'TypeError', 'mmap indices must be integers'),
    ('mmap[i]', 'map without PROT_READ', 'fastio.mmap(-1, 4096, prot=0)[0]', 'TypeError', "mmap can't read a memory map mapped without PROT_READ (prot=0)"),
    ('mmap[i]=v', 'value out of byte range', 'M.__setitem__(0, 256)', 'ValueError', 'mmap item value must be in range(0, 256), got value=256'),
    ('mmap[i]=v', 'value a str', 'M.__setitem__(0, "a")', 'TypeError', 'mmap item value must be an int, got str'),
    ('mmap[a:b]=v', 'wrong length', 'M.__setitem__(slice(0, 4), b"ab")', 'IndexError', 'mmap slice assignment is wrong size: the slice has 4 bytes, the value 2'),
    ('mmap[i]=v', 'read-only map', 'RM.__setitem__(0, 1)', 'TypeError', "mmap can't modify a readonly memory map."),
    ('mmap.read', 'n a str', 'M.read("a")', 'TypeError', "'str' object cannot be interpreted as an integer"),
    ('mmap.read_byte', 'at end', 'END.read_byte()', 'ValueError', 'read byte out of range: pos=16, length=16'),
    ('mmap.write', 'read-only map', 'RM.write(b"a")', 'TypeError', "mmap can't modify a readonly memory map."),
    ('mmap.write', 'past end', 'END.write(b"a")', 'ValueError', 'data out of range: pos=16 + len(data)=1 > length=16'),
    ('mmap.write', 'data a str', 'M.write("abc")', 'TypeError', "a bytes-like object is required, not 'str'"),
    ('mmap.write_byte', 'value 256', 'M.write_byte(256)', 'OverflowError', 'unsigned byte integer is greater than maximum'),
    ('mmap.seek', 'negative position', 'M.seek(-1)', 'ValueError', 'seek out of range: pos=-1, whence=0, length=4096'),
    ('mmap.seek', 'past end', 'M.seek(10**6)', 'ValueError', 'seek out of range: pos=1000000, whence=0, length=4096'),
    ('mmap.seek', 'bad whence', 'M.seek(0, 7)', 'ValueError', 'unknown seek type: whence=7'),
    ('mmap.find', 'sub a str', 'M.find("a")', 'TypeError', "a bytes-like object is required, not 'str'"),
    ('mmap.rfind', 'sub an int', 'M.rfind(5)', 'TypeError', "a bytes-like object is required, not 'int'"),
    ('mmap.move', 'source out of range', 'M.move(0, 10**6, 1)', 'ValueError', 'source, destination, or count out of range: dest=0, src=1000000, count=1, length=4096'),
    ('mmap.move', 'negative count', 'M.move(0, 0, -1)', 'ValueError', 'source, destination, or count out of range: dest=0, src=0, count=-1, length=4096'),
    ('mmap.move', 'dest out of range', 'M.move(10**6, 0, 1)', 'ValueError', 'source, destination, or count out of range: dest=1000000, src=0, count=1, length=4096'),
    ('mmap.resize', 'negative size', 'M.resize(-1)', 'ValueError', 'new size out of range: newsize=-1'),
    ('mmap.resize', 'read-only map', 'RM.resize(10)', 'TypeError', "mmap can't resize a readonly or copy-on-write memory map."),
    ('mmap.flush', 'negative size', 'M.flush(0, -2)', 'ValueError', 'flush values out of range: size=-2'),
    ('mmap.flush', 'flags and async_', 'M.flush(flags=fastio.MS_SYNC, async_=True)', 'ValueError', 'flush: pass flags= or async_=True, not both (async_ is flags=MS_ASYNC): flags=4'),
    ('mmap.flush', 'bad flags', 'M.flush(flags=-1)', 'OSError', '[Errno 22] Invalid argument (msync)'),
    ('mmap.set_name', 'name a bytes', 'M.set_name(b"x")', 'TypeError', 'set_name() argument must be str, not bytes'),
    ('mmap.set_name', 'name too long', 'M.set_name("x" * 67)', 'ValueError', 'name is too long: 67 bytes in UTF-8, at most 66'),
    ('mmap.set_name', 'embedded NUL', 'M.set_name("a\\0b")', 'ValueError', 'embedded null character'),
    ('mmap.set_name', 'file map', 'RM.set_name("x")', 'ValueError', 'Cannot set annotation on non-anonymous mappings'),
    ('mmap.flush', 'range past end', 'M.flush(0, 10**7)', 'ValueError', 'flush values out of range: offset=0, size=10000000, length=4096'),
    ('mmap.madvise', 'bad option', 'M.madvise(12345)', 'OSError', '[Errno 22] Invalid argument (madvise)'),
    ('mmap.madvise', 'start past end', 'M.madvise(fastio.MADV_NORMAL, 10**7)', 'ValueError', 'madvise start out of bounds: start=10000000, length of map=4096'),
    ('mmap.madvise', 'negative start', 'M.madvise(fastio.MADV_NORMAL, -1)', 'ValueError', 'madvise start out of bounds: start=-1, length of map=4096'),
    ('mmap.advise', 'bad advice str', 'M.advise("bogus")', 'TypeError', "advice must be an integer, got advice='bogus' (str)"),
    ('mmap.advise', 'start a float', 'M.advise(fastio.MADV_NORMAL, 0.5)', 'TypeError', 'start must be an integer, got start=0.5 (float)'),
    ('mmap.advise', 'length past end', 'M.advise(fastio.MADV_NORMAL, 10, 4096)', 'ValueError', 'advise length out of range: start=10, length=4096, size=4096'),
    ('mmap.advise', 'negative length', 'M.advise(fastio.MADV_NORMAL, 0, -5)', 'ValueError', 'advise length must be >= 0, got length=-5'),
    ('mmap.read', 'closed map', 'CM.read()', 'ValueError', 'mmap closed or invalid'),
    ('mmap.size', 'closed map', 'CM.size()', 'ValueError', 'mmap closed or invalid'),
    ('mmap[i]', 'closed map', 'CM[0]', 'ValueError', 'mmap closed or invalid'),
    ('mmap.populate', 'closed map', 'CM.populate()', 'ValueError', 'mmap closed or invalid'),
    ('mmap.asarray', 'bad dtype', 'M.asarray("bogus")', 'TypeError', "data type 'bogus' not understood"),
    ('mmap.asarray', 'shape too big', 'M.asarray("u1", (10**6,))', 'ValueError', 'shape=(1000000,) of dtype=uint8 at offset=0 needs 1000000 bytes; the buffer has 4096'),
    ('mmap.residency', 'closed map', 'CM.residency()', 'ValueError', 'mmap closed or invalid'),
    ('mmap.lock', 'closed map', 'CM.lock()', 'ValueError', 'mmap closed or invalid'),
    ('fastio.memmap', 'missing file', 'fastio.memmap(MISSING)', 'FileNotFoundError', "[Errno 2] No such file or directory: '*'"),
    ('fastio.memmap', 'bad mode', 'fastio.memmap(P, mode="z")', 'ValueError', "mode must be one of ['r', 'c', 'r+', 'w+', 'readonly', 'copyonwrite', 'readwrite', 'write'] (got 'z')"),
    ('fastio.memmap', 'bad dtype', 'fastio.memmap(P, dtype="bogus")', 'TypeError', "data type 'bogus' not understood"),
    ('fastio.memmap', 'negative offset', 'fastio.memmap(P, offset=-1)', 'OverflowError', 'offset must not be negative, got offset=-1'),
    ('fastio.memmap', 'w+ without shape', 'fastio.memmap(P2, mode="w+")', 'ValueError', "shape must be given if mode == 'w+'"),
    ('fastio.memmap', 'bad order', 'fastio.memmap(P, order="Q")', 'ValueError', "order must be one of 'C', 'F', 'A', or 'K' (got 'Q')"),
    ('fastio.open_array', 'unknown option', 'fastio.open_array(P, "u1", bogus=1)', 'TypeError', "open_array() got unexpected keyword argument(s) ['bogus']; options are ['populate', 'hugepages', 'advise']"),
    ('fastio.open_array', 'missing file', 'fastio.open_array(MISSING, "u1")', 'FileNotFoundError', "[Errno 2] No such file or directory: '*'"),
    ('fastio.open_array', 'bad mode', 'fastio.open_array(P, "u1", mode="q")', 'ValueError', "mode must be one of ['r', 'c', 'r+', 'w+', 'readonly', 'copyonwrite', 'readwrite', 'write'] (got 'q')"),
    ('fastio.open_array', 'bad dtype', 'fastio.open_array(P, "bogus")', 'TypeError', "data type 'bogus' not understood"),
    ('fastio.open_array', 'bad advise', 'fastio.open_array(P, "u1", advise="bogus")', 'TypeError', "advice must be an integer, got advice='bogus' (str)"),
    ('fastio.open_array', 'negative shape', 'fastio.open_array(P, "u1", shape=(-1,))', 'OverflowError', 'shape=(-1,) has a negative dimension'),
    ('fastio.empty', 'negative size', 'fastio.empty(-1)', 'ValueError', 'shape must not be negative, got shape=-1'),
    ('fastio.empty', 'bad align', 'fastio.empty(10, align=3)', 'ValueError', 'alignment must be a power of two >= 8, got align=3'),
    ('fastio.empty', 'bad dtype', 'fastio.empty(10, dtype="bogus")', 'TypeError', "data type 'bogus' not understood"),
    ('fastio.empty', 'bad hugepages', 'fastio.empty(10, hugepages="x")', 'ValueError', "hugepages must be 'auto', True or False, got hugepages='x'"),
    ('fastio.empty', 'shape a str', 'fastio.empty("abc")', 'TypeError', "shape must be an int or a tuple of ints, got shape='abc'"),
    ('fastio.Buffer', 'negative nbytes', 'fastio.Buffer(-1)', 'ValueError', 'Buffer size must be >= 0, got nbytes=-1'),
    ('fastio.Buffer', 'align not power of two', 'fastio.Buffer(10, align=3)', 'ValueError', 'alignment must be a power of two >= 8, got align=3'),
    ('fastio.Buffer', 'align zero', 'fastio.Buffer(10, align=0)', 'ValueError', 'alignment must be a power of two >= 8, got align=0'),
    ('fastio.Buffer', 'nbytes a str', 'fastio.Buffer("a")', 'TypeError', "nbytes must be an integer, got nbytes='a' (str)"),
    ('fastio.Buffer', 'nbytes a float', 'fastio.Buffer(4096.0)', 'TypeError', 'nbytes must be an integer, got nbytes=4096.0 (float)'),
    ('fastio.Buffer', 'align a float', 'fastio.Buffer(10, align=8.0)', 'TypeError', 'align must be an integer, got align=8.0 (float)'),
    ('fastio.Buffer', 'huge nbytes', 'fastio.Buffer(1<<62)', 'OverflowError', 'Buffer too large: nbytes=4611686018427387904'),
    ('fastio.Buffer', 'nbytes past ssize_t', 'fastio.Buffer(2**64)', 'OverflowError', 'nbytes out of range [-9223372036854775808, 9223372036854775807]: nbytes=18446744073709551616'),
    ('fastio.Buffer', 'align a str', 'fastio.Buffer(10, align="8")', 'TypeError', "align must be an integer, got align='8' (str)"),
    ('Buffer.address', 'closed', 'CB.address', 'ValueError', 'Buffer is closed'),
    ('Buffer buffer export', 'closed', 'memoryview(CB)', 'ValueError', 'Buffer is closed'),
    ('fastio.heap_info', 'argument given', 'fastio.heap_info(1)', 'TypeError', 'heap_info() takes 0 positional arguments but 1 was given'),
    ('fastio.pread', 'bad fd', 'fastio.pread(987654, bytearray(4), 0)', 'OSError', '[Errno 9] Bad file descriptor (pread)'),
    ('fastio.pread', 'negative offset', 'fastio.pread(FD, bytearray(4), -1)', 'ValueError', 'offset must be >= 0, got offset=-1'),
    ('fastio.pread', 'read-only buffer', 'fastio.pread(FD, b"abcd", 0)', 'TypeError', 'pread() argument buf must be a writable contiguous buffer, got bytes'),
    ('fastio.pread', 'fd a str', 'fastio.pread("x", bytearray(4), 0)', 'TypeError', 'argument must be an int, or have a fileno() method.'),
    ('fastio.pread', 'closed file object', 'fastio.pread(CLOSEDF, bytearray(4), 0)', 'ValueError', 'I/O operation on closed file'),
    ('fastio.pwrite', 'negative offset', 'fastio.pwrite(WFD, b"ab", -1)', 'ValueError', 'offset must be >= 0, got offset=-1'),
    ('fastio.pwrite', 'read-only fd', 'fastio.pwrite(FD, b"ab", 0)', 'OSError', '[Errno 9] Bad file descriptor (pwrite)'),
    ('fastio.pwrite', 'data a str', 'fastio.pwrite(WFD, "ab", 0)', 'TypeError', 'pwrite() argument buf must be a bytes-like contiguous buffer, got str'),
    ('fastio.preadv', 'buffers not a sequence', 'fastio.preadv(FD, 5, 0)', 'TypeError', 'buffers must be a sequence of buffers, got buffers of type int'),
    ('fastio.preadv', 'read-only buffer in list', 'fastio.preadv(FD, [b"ab"], 0)', 'TypeError', 'preadv() argument buffers[0] must be a writable contiguous buffer, got bytes'),
    ('fastio.preadv', 'negative offset', 'fastio.preadv(FD, [bytearray(2)], -1)', 'ValueError', 'offset must be >= 0, got offset=-1'),
    ('fastio.preadv', 'too many buffers', 'fastio.preadv(FD, [bytearray(1)] * 5000, 0)', 'ValueError', 'preadv() takes at most 1024 buffers, got 5000'),
    ('fastio.pwritev', 'negative offset', 'fastio.pwritev(WFD, [b"a"], -1)', 'ValueError', 'offset must be >= 0, got offset=-1'),
    ('fastio.pwritev', 'item not a buffer', 'fastio.pwritev(WFD, [1], 0)', 'TypeError', 'pwritev() argument buffers[0] must be a bytes-like contiguous buffer, got int'),
    ('fastio.readinto_full', 'negative offset', 'fastio.readinto_full(FD, bytearray(4), -1)', 'ValueError', 'offset must be >= 0, got offset=-1'),
    ('fastio.readinto_full', 'offset + len too large', 'fastio.readinto_full(FD, bytearray(10), 2**63-5)', 'OverflowError', 'offset + len(buf) is too large: offset=9223372036854775803, len(buf)=10'),
    ('fastio.readinto_full', 'bad fd', 'fastio.readinto_full(987654, bytearray(4), 0)', 'OSError', '[Errno 9] Bad file descriptor (pread)'),
    ('fastio.fadvise', 'bad advice', 'fastio.fadvise(FD, 0, 0, 999)', 'ValueError', 'fadvise: invalid advice=999 (or fd is not a file)'),
    ('fastio.fadvise', 'advice a float', 'fastio.fadvise(FD, 0, 0, 1.0)', 'TypeError', 'advice must be an integer, got advice=1.0 (float)'),
    ('fastio.fadvise', 'negative offset', 'fastio.fadvise(FD, -1, 0, 0)', 'ValueError', 'offset must be >= 0, got offset=-1'),
    ('fastio.fadvise', 'bad fd', 'fastio.fadvise(987654, 0, 0, 0)', 'OSError', '[Errno 9] Bad file descriptor (posix_fadvise)'),
    ('fastio.readahead', 'negative offset', 'fastio.readahead(FD, -1, 10)', 'ValueError', 'offset must be >= 0, got offset=-1'),
    ('fastio.readahead', 'bad fd', 'fastio.readahead(987654, 0, 10)', 'OSError', '[Errno 9] Bad file descriptor (readahead)'),
    ('fastio.read_file', 'missing file', 'fastio.read_file(MISSING)', 'FileNotFoundError', "[Errno 2] No such file or directory: '*'"),
    ('fastio.read_file', 'bad method', 'fastio.read_file(P, method="bogus")', 'ValueError', "method must be one of ('auto', 'pread', 'threads', 'mmap', 'readinto'), got method='bogus'"),
    ('fastio.read_file', 'bad dtype', 'fastio.read_file(P, dtype="bogus")', 'TypeError', "data type 'bogus' not understood"),
    ('fastio.read_file', 'size not a multiple of dtype', 'fastio.read_file(P7, dtype="u4")', 'ValueError', "file size 7 of '*' is not a multiple of dtype=uint32 itemsize 4"),
    ('fastio.read_file', 'bad mode', 'fastio.read_file(P, mode="fast")', 'ValueError', "mode must be one of ('auto', 'copy', 'queue', 'direct'), got mode='fast'"),
    ('fastio.read_file', 'threads 0', 'fastio.read_file(P, threads=0)', 'ValueError', 'threads must be within 1..64, got threads=0'),
    ('fastio.read_file', 'threads a str', 'fastio.read_file(P, threads="2")', 'TypeError', "threads must be an integer, got threads='2'"),
    ('fastio.read_file', 'uncached None', 'fastio.read_file(P, uncached=None)', 'TypeError', 'uncached must be True or False, got uncached=None'),
    ('fastio.read_file', 'uncached with method mmap', 'fastio.read_file(P, method="mmap", uncached=True)', 'ValueError', "uncached=True reads with preadv2: method must be 'auto', 'pread' or 'threads', got method='mmap'"),
    ('fastio.read_file', 'method with mode queue', 'fastio.read_file(P, method="pread", mode="queue")', 'ValueError', "method chooses how mode='copy' copies: method='pread' does not apply to mode='queue'"),
    ('fastio.read_file', 'stats a tuple', 'fastio.read_file(P, stats=())', 'TypeError', 'stats must be a dict to fill in or None, got stats of type tuple'),
    ('fastio.read_file', 'a directory', 'fastio.read_file(TMPDIR)', 'IsADirectoryError', "[Errno 21] Is a directory: '*'"),
    ('fastio.SharedMemory', 'negative size', 'fastio.SharedMemory(create=True, size=-1)', 'ValueError', 'creating a segment needs size > 0, got size=-1'),
    ('fastio.SharedMemory', 'create with size 0', 'fastio.SharedMemory(create=True, size=0)', 'ValueError', 'creating a segment needs size > 0, got size=0'),
    ('fastio.SharedMemory', 'missing name', 'fastio.SharedMemory("fastio-no-such-seg")', 'FileNotFoundError', "[Errno 2] No such file or directory (shm_open): '/fastio-no-such-seg'"),
    ('fastio.SharedMemory', 'name with slash', 'fastio.SharedMemory("a/b", create=True, size=10)', 'ValueError', "name must not contain '/' (after a leading one), got name='a/b'"),
    ('fastio.SharedMemory', 'bad mode', 'fastio.SharedMemory(create=True, size=10, mode=-1)', 'ValueError', 'mode must be an int within 0o7777, got mode=-1'),
    ('fastio.SharedMemory', 'mode a str', 'fastio.SharedMemory(create=True, size=10, mode="600")', 'TypeError', 'mode must be an int, got mode of type str'),
    ('fastio.SharedMemory', 'name an int', 'fastio.SharedMemory(5.5)', 'TypeError', 'name must be a str, got name=5.5'),
    ('fastio.SharedMemory', 'existing name with create', 'fastio.SharedMemory(SHM.name, create=True, size=10)', 'FileExistsError', "[Errno 17] File exists (shm_open): '/*'"),
    ('fastio.SharedMemory', 'too-long name', 'fastio.SharedMemory("x" * 300, create=True, size=10)', 'ValueError', 'name is 300 bytes; the limit is 255: name=*'),
    ('SharedMemory.fill', 'value 256', 'SHM.fill(256)', 'ValueError', 'fill value must be a byte (0..255), got value=256'),
    ('SharedMemory.fill', 'start past end', 'SHM.fill(0, 10**6)', 'ValueError', 'fill start out of range: start=1000000, size=4096'),
    ('SharedMemory.fill', 'length past end', 'SHM.fill(0, 10, 4096)', 'ValueError', 'fill length out of range: start=10, length=4096, size=4096'),
    ('SharedMemory.fill', 'value a float', 'SHM.fill(1.0)', 'TypeError', 'value must be an integer, got value=1.0 (float)'),
    ('SharedMemory.fill', 'huge start', 'SHM.fill(0, 2**70)', 'OverflowError', 'start out of range [*]: start=1180591620717411303424'),
    ('SharedMemory.advise', 'bad advice', 'SHM.advise(12345)', 'OSError', '[Errno 22] Invalid argument (madvise)'),
    ('SharedMemory.add_seals', 'not memfd', 'SHM.add_seals(1)', 'PermissionError', '[Errno 1] Operation not permitted (fcntl F_ADD_SEALS)'),
    ('SharedMemory.fileno', 'closed', 'CSHM.fileno()', 'ValueError', 'operation on a closed SharedMemory'),
    ('SharedMemory buffer export', 'closed', 'memoryview(CSHM)', 'ValueError', 'operation on a closed SharedMemory'),
    ('fastio.SysVSharedMemory', 'negative size', 'fastio.SysVSharedMemory(size=-1)', 'ValueError', 'creating a segment needs size > 0, got size=-1'),
    ('fastio.SysVSharedMemory', 'size 0 private', 'fastio.SysVSharedMemory(size=0)', 'ValueError', 'creating a segment needs size > 0, got size=0'),
    ('fastio.SysVSharedMemory', 'bad mode', 'fastio.SysVSharedMemory(size=10, mode=0o1777)', 'ValueError', 'mode must be an int within 0o777, got mode=1023'),
    ('fastio.SysVSharedMemory', 'mode a str', 'fastio.SysVSharedMemory(size=10, mode="600")', 'TypeError', 'mode must be an int, got mode of type str'),
    ('fastio.SysVSharedMemory', 'missing key', 'fastio.SysVSharedMemory(0x7ead0001)', 'FileNotFoundError', '[Errno 2] No such file or directory (shmget)'),
    ('fastio.SysVSharedMemory', 'key a float', 'fastio.SysVSharedMemory(1.5, size=10)', 'TypeError', 'key must be None, an int or a path, got key=1.5'),
    ('SysVSharedMemory.fill', 'value -1', 'SYSV.fill(-1)', 'ValueError', 'fill value must be a byte (0..255), got value=-1'),
    ('SysVSharedMemory.stat', 'closed', 'CSYSV.stat()', 'ValueError', 'operation on a closed (detached) SysVSharedMemory'),
    ('SysVSharedMemory.lock', 'closed', 'CSYSV.lock()', 'ValueError', 'operation on a closed (detached) SysVSharedMemory'),
    ('fastio.memfd', 'negative size', 'fastio.memfd(-1)', 'ValueError', 'creating a segment needs size > 0, got size=-1'),
    ('fastio.memfd', 'name with NUL', 'fastio.memfd(10, "a\\0b")', 'ValueError', 'embedded null byte'),
    ('fastio.memfd', 'seal a str', 'fastio.memfd(10, seal="x")', 'TypeError', "seal must be a bool or F_SEAL_* flags, got seal='x'"),
    ('fastio.memfd', 'size a str', 'fastio.memfd("x")', 'TypeError', "size must be an int, got size='x'"),
    ('fastio.shared_array', 'negative shape', 'fastio.shared_array((-1,))', 'ValueError', 'shape=(-1,) has a negative dimension'),
    ('fastio.shared_array', 'object dtype', 'fastio.shared_array(4, dtype=object)', 'ValueError', 'dtype=object holds Python objects; it cannot be shared'),
    ('fastio.shared_array', 'bad backend', 'fastio.shared_array(4, backend="bogus")', 'ValueError', "backend must be one of ('posix', 'memfd', 'sysv'), got backend='bogus'"),
    ('fastio.shared_array', 'bad order', 'fastio.shared_array(4, order="Q")', 'ValueError', "order must be 'C' or 'F', got order='Q'"),
    ('fastio.Lock', 'buffer too small', 'fastio.Lock(bytearray(4))', 'ValueError', 'Lock needs 64 bytes at offset=0, but the buffer holds 4 bytes'),
    ('fastio.Lock', 'negative offset', 'fastio.Lock(SEG, -1)', 'ValueError', 'offset out of range [0, 9223372036854775807]: offset=-1'),
    ('fastio.Lock', 'misaligned offset', 'fastio.Lock(SEG, 3)', 'ValueError', 'Lock must start on a multiple of 16 bytes: offset=3 gives address 0x*'),
    ('fastio.Lock', 'offset past end', 'fastio.Lock(SEG, 10**6)', 'ValueError', 'Lock needs 64 bytes at offset=1000000, but the buffer holds 4096 bytes'),
    ('fastio.Lock', 'read-only buffer', 'fastio.Lock(b"x" * 64)', 'TypeError', 'Lock needs a writable buffer shared between processes (fastio.mmap, SharedMemory, ...), got buffer of type bytes'),
    ('fastio.Lock', 'attach where none is', 'fastio.Lock(SEG, 128, create=False)', 'ValueError', 'the memory at offset=128 holds no fastio.Lock (tag 0x0000000000000000 version 0, expected magic 0x4b434c46 live, version 2): create it first with create=True'),
    ('fastio.Lock', 'offset past ssize_t', 'fastio.Lock(SEG, 2**64)', 'OverflowError', 'offset out of range [0, 9223372036854775807]: offset=18446744073709551616'),
    ('fastio.Lock', 'offset a float', 'fastio.Lock(SEG, 16.0)', 'TypeError', 'offset must be an integer, got offset=16.0 (float)'),
    ('fastio.Lock', 'create over a live Lock', 'fastio.Lock(SEG, 0)', 'FileExistsError', 'the memory at offset=0 already holds a live fastio.Lock: attach to it with create=False (to make a new one there once no process uses the old one, clear its 64 bytes first)'),
    ('fastio.Lock', 'create over a live Semaphore', 'fastio.Lock(SEG, 192)', 'FileExistsError', 'the memory at offset=192 already holds a live fastio.Semaphore: a fastio.Lock there would destroy it; use another offset'),
    ('Lock.close', 'held by this thread', '(lambda l: (l.acquire(), l.close()))(fastio.Lock(fastio.mmap(-1, 4096)))', 'RuntimeError', "close(): this thread holds the Lock at offset=0; release() it first (this thread's list of held robust locks points into its memory, which closing could unmap)"),
    ('Lock.acquire', 'timeout past the limit', 'LOCK.acquire(timeout=1e300)', 'OverflowError', 'timeout is too large: at most 1000000000 seconds (or -1, inf or None for no limit), got timeout=1e+300'),
    ('Lock.acquire', 'timeout NaN', 'LOCK.acquire(timeout=float("nan"))', 'ValueError', 'timeout must be a non-negative number of seconds, -1 or None, got timeout=nan'),
    ('Lock.acquire', 'negative timeout', 'LOCK.acquire(timeout=-2)', 'ValueError', 'timeout must be a non-negative number of seconds, -1 or None, got timeout=-2'),
    ('Lock.acquire', 'timeout without blocking', 'LOCK.acquire(False, 1.0)', 'ValueError', "can't specify a timeout for a non-blocking call"),
    ('Lock.release', 'not held', 'LOCK.release()', 'RuntimeError', 'release unlocked lock: this thread does not hold the Lock (a process-shared lock is released by the thread that acquired it)'),
    ('Lock.acquire', 'closed', 'CLOCK.acquire()', 'ValueError', 'Lock is closed'),
    ('fastio.Semaphore', 'negative value', 'fastio.Semaphore(SEG, 256, value=-1)', 'ValueError', 'value out of range [0, 2147483647]: value=-1'),
    ('fastio.Semaphore', 'value too large', 'fastio.Semaphore(SEG, 256, value=1<<40)', 'OverflowError', 'value out of range [0, 2147483647]: value=1099511627776'),
    ('fastio.Semaphore', 'buffer too small', 'fastio.Semaphore(bytearray(2))', 'ValueError', 'Semaphore needs 64 bytes at offset=0, but the buffer holds 2 bytes'),
    ('Semaphore.release', 'n zero', 'SEM.release(0)', 'ValueError', 'n out of range [1, 2147483647]: n=0'),
    ('Semaphore.release', 'n negative', 'SEM.release(-1)', 'ValueError', 'n out of range [1, 2147483647]: n=-1'),
    ('fastio.Semaphore', 'create over a live Semaphore', 'fastio.Semaphore(SEG, 192)', 'FileExistsError', 'the memory at offset=192 already holds a live fastio.Semaphore: attach to it with create=False (to make a new one there once no process uses the old one, clear its 64 bytes first)'),
    ('Semaphore.release', 'n past SEM_VALUE_MAX', 'SEM.release(2**64)', 'OverflowError', 'n out of range [1, 2147483647]: n=18446744073709551616'),
    ('Semaphore.release', 'count would pass SEM_VALUE_MAX', 'SEM.release(2**31 - 1)', 'ValueError', 'release(n=2147483647) would raise the count past 2147483647 (it is *)'),
    ('Semaphore.release', 'n a float', 'SEM.release(1.5)', 'TypeError', 'n must be an integer, got n=1.5 (float)'),
    ('fastio.Semaphore', 'value a float', 'fastio.Semaphore(SEG, 256, value=1.0)', 'TypeError', 'value must be an integer, got value=1.0 (float)'),
    ('Semaphore.acquire', 'timeout a str', 'SEM.acquire(timeout="x")', 'TypeError', 'timeout must be a number of seconds, -1 or None, got timeout of type str'),
    ('Semaphore.acquire', 'timeout NaN', 'SEM.acquire(timeout=float("nan"))', 'ValueError', 'timeout must be a non-negative number of seconds, -1 or None, got timeout=nan'),
    ('Semaphore.acquire', 'negative timeout', 'SEM.acquire(timeout=-2)', 'ValueError', 'timeout must be a non-negative number of seconds, -1 or None, got timeout=-2'),
    ('Semaphore.acquire', 'timeout past the limit', 'SEM.acquire(timeout=1e300)', 'OverflowError', 'timeout is too large: at most 1000000000 seconds (or -1, inf or None for no limit), got timeout=1e+300'),
    ('Semaphore.acquire', 'timeout without blocking', 'SEM.acquire(False, 1.0)', 'ValueError', "can't specify a timeout for a non-blocking call"),
    ('fastio.Semaphore', 'value a str', 'fastio.Semaphore(SEG, 256, value="1")', 'TypeError', "value must be an integer, got value='1' (str)"),
    ('fastio.Semaphore', 'offset a float', 'fastio.Semaphore(SEG, 256.0)', 'TypeError', 'offset must be an integer, got offset=256.0 (float)'),
    ('Semaphore.release', 'n a str', 'SEM.release("1")', 'TypeError', "n must be an integer, got n='1' (str)"),
    ('fastio.Channel', 'capacity 0', 'fastio.Channel(0)', 'ValueError', 'Channel capacity must be a positive number of bytes, got capacity=0'),
    ('fastio.Channel', 'capacity negative', 'fastio.Channel(-5)', 'ValueError', 'Channel capacity must be a positive number of bytes, got capacity=-5'),
    ('fastio.Channel', 'capacity a str', 'fastio.Channel("x")', 'TypeError', "'str' object cannot be interpreted as an integer"),
    ('fastio.Channel', 'shared with buffer', 'fastio.Channel(buffer=SEG, shared=True)', 'ValueError', "shared=True makes the Channel's own segment: pass it without buffer="),
    ('fastio.Channel', 'buffer too small', 'fastio.Channel(buffer=bytearray(8))', 'ValueError', 'Channel needs 256 bytes at offset=0, but the buffer holds 8 bytes'),
    ('fastio.Channel', 'negative offset', 'fastio.Channel(buffer=SEG, offset=-64)', 'ValueError', 'offset out of range [0, 9223372036854775807]: offset=-64'),
    ('fastio.Channel', 'capacity larger than buffer', 'fastio.Channel(1<<20, buffer=SEG)', 'ValueError', 'Channel capacity=1048576 does not fit: the buffer has 3840 bytes after its 256-byte header at offset=0 (at least 64 needed)'),
    ('Channel.attach', 'no channel there', 'fastio.Channel.attach(ZSEG)', 'ValueError', 'the memory at offset=0 holds no fastio.Channel (tag 0x0000000000000000 version 0, expected magic 0x4e484346 live, version 2): create it first'),
    ('fastio.Channel', 'capacity past ssize_t', 'fastio.Channel(2**64, buffer=SEG)', 'OverflowError', 'Channel capacity=18446744073709551616 is out of range (at most 9223372036854775488 bytes)'),
    ('Channel.attach', 'offset past ssize_t', 'fastio.Channel.attach(SEG, 2**64)', 'OverflowError', 'offset out of range [0, 9223372036854775807]: offset=18446744073709551616'),
    ('fastio.Channel', 'create over a live Channel', 'fastio.Channel(buffer=CH._buffer)', 'FileExistsError', 'the memory at offset=0 already holds a live fastio.Channel: attach to it with create=False (to make a new one there once no process uses the old one, clear its 256 bytes first)'),
    ('Channel.recv_bytes', 'timeout past the limit', 'CH.recv_bytes(timeout=1e300)', 'OverflowError', 'timeout is too large: at most 1000000000 seconds (or inf or None for no limit), got timeout=1e+300'),
    ('Channel.recv_bytes', 'timeout NaN', 'CH.recv_bytes(timeout=float("nan"))', 'ValueError', 'timeout must be a non-negative number of seconds or None, got timeout=nan'),
    ('Channel.send_bytes', 'message too large', 'CH.send_bytes(b"x" * 100000)', 'ValueError', 'message of 100000 bytes (100016 with its framing) exceeds the Channel capacity of 4096 bytes'),
    ('Channel.send_bytes', 'data a str', 'CH.send_bytes("abc")', 'TypeError', "a bytes-like object is required, not 'str'"),
    ('Channel.send_bytes', 'timeout NaN', 'CH.send_bytes(b"a", timeout=float("nan"))', 'ValueError', 'timeout must be a non-negative number of seconds or None, got timeout=nan'),
    ('Channel.send_bytes', 'timeout a str', 'CH.send_bytes(b"a", timeout="1")', 'TypeError', 'timeout must be a number of seconds or None, got timeout of type str'),
    ('Channel.attach', 'offset a float', 'fastio.Channel.attach(SEG, 0.0)', 'TypeError', 'offset must be an integer, got offset=0.0 (float)'),
    ('Channel.recv_bytes', 'timeout a str', 'CH.recv_bytes(timeout="x")', 'TypeError', 'timeout must be a number of seconds or None, got timeout of type str'),
    ('Lock.acquire', 'timeout a list', 'LOCK.acquire(timeout=[1])', 'TypeError', 'timeout must be a number of seconds, -1 or None, got timeout of type list'),
    ('Channel.recv_bytes', 'negative timeout', 'CH.recv_bytes(timeout=-1)', 'ValueError', 'timeout must be a non-negative number of seconds or None, got timeout=-1'),
    ('Channel.recv_bytes', 'nothing sent, timeout', 'CH.recv_bytes(timeout=0.01)', 'TimeoutError', 'Channel.recv timed out: no message'),
    ('Channel.send_bytes', 'closed', 'CCH.send_bytes(b"a")', 'ValueError', 'Channel is closed'),
    ('Channel.segment_size', 'capacity 0', 'fastio.Channel.segment_size(0)', 'ValueError', 'capacity must be positive, got capacity=0'),
    ('fastio.sendfile', 'bad out fd', 'fastio.sendfile(987654, FD)', 'OSError', '[Errno 9] Bad file descriptor (fstat)'),
    ('fastio.sendfile', 'negative offset', 'fastio.sendfile(WFD, FD, -1)', 'ValueError', 'offset must be >= 0, not -1'),
    ('fastio.sendfile', 'negative count', 'fastio.sendfile(WFD, FD, 0, -1)', 'ValueError', 'count must be >= 0, not -1'),
    ('fastio.sendfile', 'bad method', 'fastio.sendfile(WFD, FD, method="bogus")', 'ValueError', "method must be 'auto' or one of 'sendfile', 'splice', 'readwrite', not 'bogus'"),
    ('fastio.copy_file_range', 'negative count', 'fastio.copy_file_range(FD, WFD, -1)', 'ValueError', 'count must be >= 0, not -1'),
    ('fastio.copy_file_range', 'negative src_offset', 'fastio.copy_file_range(FD, WFD, 10, src_offset=-1)', 'ValueError', 'src_offset must be >= 0, not -1'),
    ('fastio.copy_file_range', 'bad fd', 'fastio.copy_file_range(987654, WFD, 10)', 'OSError', '[Errno 9] Bad file descriptor (fstat)'),
    ('fastio.copyfile', 'missing source', 'fastio.copyfile(MISSING, P2)', 'FileNotFoundError', "[Errno 2] No such file or directory: '*'"),
    ('fastio.copyfile', 'bad method', 'fastio.copyfile(P, P2, method="bogus")', 'ValueError', "method must be 'auto' or one of 'reflink', 'copy_file_range', 'sendfile', 'readwrite', not 'bogus'"),
    ('fastio.copyfile', 'same file', 'fastio.copyfile(P, P)', 'SameFileError', "'*' and '*' are the same file"),
    ('fastio.copyfile', 'into a missing directory', 'fastio.copyfile(P, MISSING + "/")', 'FileNotFoundError', 'Directory does not exist: */missing.bin/'),
    ('fastio.copyfile', 'src a descriptor', 'fastio.copyfile(FD, P2)', 'TypeError', 'src and dst must be paths (str, bytes or os.PathLike), not int and str'),
    ('fastio.splice', 'negative count', 'fastio.splice(PR, WFD, -1)', 'ValueError', 'count must be >= 0, not -1'),
    ('fastio.tee', 'not pipes', 'fastio.tee(FD, WFD, 10)', 'OSError', '[Errno 22] Invalid argument (tee)'),
    ('fastio.tee', 'negative count', 'fastio.tee(PR, PW2, -1)', 'ValueError', 'count must be >= 0, not -1'),
    ('fastio.tee', 'negative timeout', 'fastio.tee(PR, PW2, 10, timeout=-1)', 'ValueError', 'timeout must be a non-negative number of seconds or None, got timeout=-1'),
    ('fastio.tee', 'NaN timeout', 'fastio.tee(PR, PW2, 10, timeout=float("nan"))', 'ValueError', 'timeout must be a non-negative number of seconds or None, got timeout=nan'),
    ('fastio.tee', 'huge timeout', 'fastio.tee(PR, PW2, 10, timeout=1e300)', 'OverflowError', 'timeout is too large: at most 1000000000 seconds (or inf or None for no limit), got timeout=1e+300'),
    ('fastio.Queue', 'depth 0', 'fastio.Queue(0)', 'ValueError', 'depth out of range [1, 65536]: depth=0'),
    ('fastio.Queue', 'depth negative', 'fastio.Queue(-1)', 'ValueError', 'depth out of range [1, 65536]: depth=-1'),
    ('fastio.Queue', 'submit_batch 0', "fastio.Queue(4, 'threads', submit_batch=0)", 'ValueError', 'submit_batch out of range [1, 9223372036854775807]: submit_batch=0'),
    ('fastio.Queue', 'bad backend', 'fastio.Queue(8, "bogus")', 'ValueError', "backend must be 'auto' or one of ('io_uring', 'linux_aio', 'posix_aio', 'threads'), got backend='bogus'"),
    ('fastio.Queue', 'unknown option', 'fastio.Queue(8, bogus=1)', 'TypeError', "*'bogus'*"),  # Python 3.13 words it "Queue() got an unexpected keyword argument 'bogus'"
    ('fastio.Queue', 'depth a str', 'fastio.Queue("x")', 'TypeError', "depth must be an integer, got depth='x' (str)"),
    ('fastio.Queue', 'depth a float', 'fastio.Queue(4.0)', 'TypeError', 'depth must be an integer, got depth=4.0 (float)'),
    ('fastio.Queue', 'depth past a C long', 'fastio.Queue(2**70)', 'OverflowError', 'depth out of range [1, 65536]: depth=1180591620717411303424'),
    ('fastio.Queue', 'threads negative', "fastio.Queue(4, 'threads', threads=-1)", 'ValueError', 'threads out of range [0, 2147483647]: threads=-1'),
    ('fastio.Queue', 'sqpoll_idle_ms negative', "fastio.Queue(4, 'threads', sqpoll_idle_ms=-1)", 'ValueError', 'sqpoll_idle_ms out of range [0, 2147483647]: sqpoll_idle_ms=-1'),
    ('fastio.Queue', 'submit_batch past int64', "fastio.Queue(4, 'threads', submit_batch=2**64)", 'OverflowError', 'submit_batch out of range [1, 9223372036854775807]: submit_batch=18446744073709551616'),
    ('fastio.Queue', 'depth past 65536', 'fastio.Queue(65537)', 'ValueError', 'depth out of range [1, 65536]: depth=65537'),
    ('fastio.Queue', 'submit_batch a float', "fastio.Queue(4, 'threads', submit_batch=8.0)", 'TypeError', 'submit_batch must be an integer, got submit_batch=8.0 (float)'),
    ('fastio.Queue', 'sqpoll_idle_ms past int', "fastio.Queue(4, 'threads', sqpoll_idle_ms=2**31)", 'OverflowError', 'sqpoll_idle_ms out of range [0, 2147483647]: sqpoll_idle_ms=2147483648'),
    ('fastio.Queue', 'threads a str', "fastio.Queue(4, 'threads', threads='2')", 'TypeError', "threads must be an integer, got threads='2' (str)"),
    ('Queue.read', 'read-only buffer', 'Q.read(FD, b"abcd", 0)', 'TypeError', 'read() argument buf must be a writable contiguous buffer, got bytes (Object is not writable.)'),
    ('Queue.read', 'negative offset', 'Q.read(FD, bytearray(4), -1)', 'ValueError', 'offset out of range [0, 9223372036854775807]: offset=-1'),
    ('Queue.read', 'bad fd', 'Q.read("x", bytearray(4), 0)', 'TypeError', 'argument must be an int, or have a fileno() method.'),
    ('Queue.wait', 'negative min_complete', 'Q.wait(-1)', 'ValueError', 'min_complete out of range [0, 9223372036854775807]: min_complete=-1'),
    ('Queue.wait', 'min_complete a float', 'Q.wait(1.5)', 'TypeError', 'min_complete must be an integer, got min_complete=1.5 (float)'),
    ('Queue.wait', 'timeout NaN', 'Q.wait(1, float("nan"))', 'ValueError', 'timeout must be a non-negative number of seconds or None, got timeout=nan'),
    ('Queue.wait', 'timeout negative', 'Q.wait(1, -1)', 'ValueError', 'timeout must be a non-negative number of seconds or None, got timeout=-1'),
    ('Queue.wait', 'timeout past the limit', 'Q.wait(1, 1e300)', 'OverflowError', 'timeout is too large: at most 1000000000 seconds (or inf or None for no limit), got timeout=1e+300'),
    ('Queue.wait', 'timeout a str', 'Q.wait(1, "1")', 'TypeError', 'timeout must be a number of seconds or None, got timeout of type str'),
    ('Queue.wait', 'min_complete past ssize_t', 'Q.wait(2**64)', 'OverflowError', 'min_complete out of range [0, 9223372036854775807]: min_complete=18446744073709551616'),
    ('Queue.write', 'offset a str', 'Q.write(FD, b"ab", "0")', 'TypeError', "offset must be an integer, got offset='0' (str)"),
    ('Queue.fsync', 'bad fd', 'Q.fsync(-1)', 'ValueError', 'file must be a non-negative file descriptor, got file=-1'),
    ('Queue.read', 'offset a float', 'Q.read(FD, bytearray(4), 1.5)', 'TypeError', 'offset must be an integer, got offset=1.5 (float)'),
    ('Queue.read', 'offset past int64', 'Q.read(FD, bytearray(4), 2**64)', 'OverflowError', 'offset out of range [0, 9223372036854775807]: offset=18446744073709551616'),
    ('Queue.read_batch', 'lengths floats', 'Q.read_batch(FD, [0], [4.0], bytearray(4))', 'TypeError', 'lengths must hold integers, got lengths[0]=4.0'),
    ('Queue.read_batch', 'offset + length past int64', 'Q.read_batch(FD, [2**63 - 8], 16, bytearray(16))', 'OverflowError', 'offsets[0] + length must fit in 64 bits, got offset 9223372036854775800 + length 16'),
    ('Queue.read', 'closed queue', 'CQ.read(FD, bytearray(4), 0)', 'ValueError', 'I/O operation on a closed Queue'),
    ('fastio.read_blocks', 'negative size', 'fastio.read_blocks(P, [0], -1)', 'ValueError', 'size must be >= 0, got size=-1'),
    ('fastio.read_blocks', 'size a float', 'fastio.read_blocks(P, [0], 4096.0)', 'TypeError', 'size must be an integer, got size=4096.0'),
    ('fastio.read_blocks', 'offsets floats', 'fastio.read_blocks(P, [0.5, 4096.0], 4096)', 'TypeError', 'offsets must hold integers, got offsets[0]=0.5'),
    ('fastio.read_blocks', 'offset past int64', 'fastio.read_blocks(P, [0, 2**64 - 1], 4096)', 'OverflowError', 'offsets must fit in int64, got offsets[1]=18446744073709551615'),
    ('fastio.read_blocks', 'negative offset', 'fastio.read_blocks(P, [-4096], 4096)', 'ValueError', 'offsets[0] must be >= 0, got -4096'),
    ('fastio.read_blocks', 'out too small', 'fastio.read_blocks(P, [0, 4096], 4096, out=bytearray(10))', 'ValueError', 'out holds 10 bytes; 2 blocks of 4096 need 8192'),
    ('fastio.read_blocks', 'bad backend', 'fastio.read_blocks(P, [0], 4096, backend="bogus")', 'ValueError', "backend must be 'auto' or one of ('io_uring', 'linux_aio', 'posix_aio', 'threads'), got backend='bogus'"),
    ('fastio.read_blocks', 'missing file', 'fastio.read_blocks(MISSING, [0], 10)', 'FileNotFoundError', "[Errno 2] No such file or directory: '*'"),
    ('fastio.read_blocks', 'bad mode', 'fastio.read_blocks(P, [0], 4096, mode="fast")', 'ValueError', "mode must be one of ('auto', 'copy', 'queue', 'direct'), got mode='fast'"),
    ('fastio.read_blocks', 'threads 0', 'fastio.read_blocks(P, [0], 4096, threads=0)', 'ValueError', 'threads must be within 1..64, got threads=0'),
    ('fastio.read_blocks', 'threads past 64', 'fastio.read_blocks(P, [0], 4096, threads=65)', 'ValueError', 'threads must be within 1..64, got threads=65'),
    ('fastio.read_blocks', 'threads a float', 'fastio.read_blocks(P, [0], 4096, threads=1.5)', 'TypeError', 'threads must be an integer, got threads=1.5'),
    ('fastio.read_blocks', 'threads a bool', 'fastio.read_blocks(P, [0], 4096, threads=True)', 'TypeError', 'threads must be an integer or None, got threads=True'),
    ('fastio.read_blocks', 'uncached a str', 'fastio.read_blocks(P, [0], 4096, uncached="yes")', 'TypeError', "uncached must be True or False, got uncached='yes'"),
    ('fastio.read_blocks', 'uncached an int', 'fastio.read_blocks(P, [0], 4096, uncached=1)', 'TypeError', 'uncached must be True or False, got uncached=1'),
    ('fastio.read_blocks', 'stats a list', 'fastio.read_blocks(P, [0], 4096, stats=[])', 'TypeError', 'stats must be a dict to fill in or None, got stats of type list'),
    ('fastio.read_blocks', 'queue with mode copy', 'fastio.read_blocks(P, [0], 4096, mode="copy", queue=Q)', 'ValueError', "queue= runs mode='queue' or 'direct', got mode='copy' with a queue"),
    ('fastio.read_blocks', 'negative offset, copy path', 'fastio.read_blocks(P, [0, -4096], 4096, mode="copy")', 'ValueError', 'offsets[1] must be >= 0, got -4096'),
    ('fastio.read_blocks', 'depth 0', 'fastio.read_blocks(P, [0], 4096, depth=0)', 'ValueError', 'depth out of range [1, 65536]: depth=0'),
    ('fastio.write_blocks', 'uncached a str', 'fastio.write_blocks(P2, [0], [b"ab"], uncached="no")', 'TypeError', "uncached must be True or False, got uncached='no'"),
    ('fastio.write_blocks', 'data size mismatch', 'fastio.write_blocks(P2, [0, 4096], b"abc")', 'ValueError', 'data must be a C-contiguous 2-D array with 2 rows, got shape ()'),
    ('fastio.write_blocks', 'negative offset', 'fastio.write_blocks(WFD, [-1], memoryview(bytearray(4096)).cast("B", (1, 4096)))', 'ValueError', 'offsets[0] must be >= 0, got -1'),
    ('fastio.open', 'bad mode', 'fastio.open(P, "q")', 'ValueError', "mode must be one of ('r', 'r+', 'w', 'w+', 'x', 'x+'), got mode='q'"),
    ('fastio.open', 'missing file', 'fastio.open(MISSING)', 'FileNotFoundError', "[Errno 2] No such file or directory: '*'"),
    ('fastio.open', 'x on existing file', 'fastio.open(P, "x")', 'FileExistsError', "[Errno 17] File exists: '*'"),
    ('fastio.open', 'negative perm', 'fastio.open(P2, "w", perm=-1)', 'ValueError', 'perm must be within 0..0o7777, got perm=-1 (-0o1)'),
    ('fastio.open', 'perm past 0o7777', 'fastio.open(P2, "w", perm=0o10000)', 'ValueError', 'perm must be within 0..0o7777, got perm=4096 (0o10000)'),
    ('fastio.open', 'perm a str', 'fastio.open(P2, "w", perm="644")', 'TypeError', 'perm must be an int (file mode bits, e.g. 0o644), got perm of type str'),
    ('fastio.open', 'perm a float', 'fastio.open(P2, "w", perm=420.0)', 'TypeError', 'perm must be an int (file mode bits, e.g. 0o644), got perm of type float'),
    ('fastio.read_files', 'missing file', 'fastio.read_files([P, MISSING])', 'FileNotFoundError', "[Errno 2] No such file or directory (stat; paths[1]): '*'"),
    ('fastio.read_files', 'a directory', 'fastio.read_files([TMPDIR])', 'IsADirectoryError', "[Errno 21] Is a directory (stat: a directory; paths[0]): '*'"),
    ('fastio.read_files', 'a FIFO (could block)', 'fastio.read_files([P, FIFO])', 'OSError', "[Errno 22] Invalid argument (a FIFO, not a regular file: refused, reading it could block; paths[1]): '*'"),
    ('fastio.read_files', 'file larger than max_size', 'fastio.read_files([P], max_size=100)', 'OSError', "[Errno 27] File too large (16384 bytes, larger than max_size=100; paths[0]): '*'"),
    ('fastio.read_files', 'negative max_size', 'fastio.read_files([P], max_size=-1)', 'ValueError', 'max_size must be >= 0 or None, got max_size=-1'),
    ('fastio.read_files', 'depth 0', 'fastio.read_files([P], depth=0)', 'ValueError', 'depth out of range [1, 4096]: depth=0'),
    ('fastio.read_files', 'depth a float', 'fastio.read_files([P], depth=2.0)', 'TypeError', 'depth must be an int, got depth=2.0'),
    ('fastio.read_files', 'out too small', 'fastio.read_files([P], out=bytearray(10))', 'ValueError', 'out is too small: the files need 16384 bytes, out has 10'),
    ('fastio.read_files', 'out read-only', 'fastio.read_files([P], out=bytes(20000))', 'TypeError', 'out must be a writable C-contiguous buffer, got a read-only bytes'),
    ('fastio.read_files', 'out not a buffer', 'fastio.read_files([P], out=[0] * 20000)', 'TypeError', 'out must be a writable C-contiguous buffer, got list'),
    ('fastio.read_files', 'bad missing', 'fastio.read_files([P], missing="ignore")', 'ValueError', "missing must be 'raise' or 'skip', got missing='ignore'"),
    ('fastio.read_files', 'bad backend', 'fastio.read_files([P], backend="bogus")', 'ValueError', "backend must be one of ('auto', 'io_uring', 'threads', 'linux_aio', 'posix_aio'), got backend='bogus'"),
    ('fastio.read_files', 'one path, not a list', 'fastio.read_files(P)', 'TypeError', "paths must be a sequence of paths, got '*' (a single path: pass [path])"),
    ('fastio.read_files', 'pattern on a file', 'fastio.read_files(P, pattern="*")', 'NotADirectoryError', "[Errno 20] pattern= needs a directory: '*'"),
    ('fastio.read_files', 'path an int', 'fastio.read_files([P, 1])', 'TypeError', 'paths[1] must be str, bytes or os.PathLike, got int'),
    ('fastio.read_files', 'path with a NUL byte', 'fastio.read_files(["a\\0b"])', 'ValueError', "paths[0] contains a NUL byte: b'a\\x00b'"),
    ('fastio.backends', 'argument given', 'fastio.backends(1)', 'TypeError', 'backends() takes 0 positional arguments but 1 was given'),
]


def _fixtures(d):
    """The names the calls use: files, descriptors, and objects (open,
    closed, read-only) of every type. Return (namespace, cleanup)."""
    P = os.path.join(d, "data.bin")
    with open(P, "wb") as f:
        f.write(os.urandom(16384))
    P7 = os.path.join(d, "seven.bin")
    with open(P7, "wb") as f:
        f.write(b"1234567")
    E = os.path.join(d, "empty.bin")
    open(E, "wb").close()
    ns = dict(fastio=fastio, P=P, P2=os.path.join(d, "out.bin"),
              P3=os.path.join(d, "out3.bin"), P7=P7, TMPDIR=d,
              MISSING=os.path.join(d, "missing.bin"), FIFO=os.path.join(d, "fifo"))
    os.mkfifo(ns["FIFO"])
    fds = []

    def fd(path, flags, mode=0o600):
        fds.append(os.open(path, flags, mode))
        return fds[-1]

    ns["FD"] = fd(P, os.O_RDONLY)
    ns["EMPTYFD"] = fd(E, os.O_RDWR)
    ns["WFD"] = fd(os.path.join(d, "w.bin"), os.O_RDWR | os.O_CREAT)
    f = open(P, "rb")
    f.close()
    ns["CLOSEDF"] = f
    objs = []

    def keep(o):
        objs.append(o)
        return o

    def closed(o):
        o.close()
        return o

    ns["M"] = keep(fastio.mmap(-1, 4096))
    ns["RM"] = keep(fastio.mmap(ns["FD"], 4096, access=fastio.ACCESS_READ))
    ns["END"] = keep(fastio.mmap(-1, 16))
    ns["END"].seek(16)
    ns["CM"] = closed(fastio.mmap(-1, 16))
    ns["CB"] = closed(fastio.Buffer(64))
    ns["SHM"] = keep(fastio.SharedMemory(create=True, size=4096))
    ns["CSHM"] = closed(fastio.SharedMemory(create=True, size=4096))
    ns["SYSV"] = keep(fastio.SysVSharedMemory(size=4096))
    ns["CSYSV"] = closed(fastio.SysVSharedMemory(size=4096))
    ns["SEG"] = keep(fastio.mmap(-1, 4096))
    ns["ZSEG"] = keep(fastio.mmap(-1, 4096))
    ns["LOCK"] = keep(fastio.Lock(ns["SEG"], 0))
    ns["CLOCK"] = closed(fastio.Lock(ns["SEG"], 64))
    ns["SEM"] = keep(fastio.Semaphore(ns["SEG"], 192, value=1))
    ns["CH"] = keep(fastio.Channel(4096))
    ns["CCH"] = closed(fastio.Channel(4096))
    r, w = os.pipe()
    r2, w2 = os.pipe()
    fds += [r, w, r2, w2]
    os.write(w, b"hello")
    ns.update(PR=r, PW=w, PR2=r2, PW2=w2)
    ns["Q"] = keep(fastio.Queue(8))
    ns["CQ"] = closed(fastio.Queue(8))

    def cleanup():
        for o in reversed(objs):
            o.close()
        for x in fds:
            os.close(x)

    return ns, cleanup


@pytest.fixture(scope="module")
def ns():
    with tempfile.TemporaryDirectory() as d:
        names, cleanup = _fixtures(d)
        yield names
        cleanup()


# Rows whose error comes from the kernel, where valgrind answers in its
# place with another errno.
VALGRIND_ANSWERS_FOR_THE_KERNEL = {
    ("fastio.mmap", "huge length"):
        "under valgrind: its address-space manager refuses a 2**62-byte mmap "
        "with EINVAL before the kernel sees it (the kernel says ENOMEM)",
}


def _matches(pattern, message):
    rx = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(rx, message, re.S) is not None


def _row_id(row):
    return f"{row[0]}: {row[1]}"


@pytest.mark.parametrize("row", ROWS, ids=[_row_id(r) for r in ROWS])
@pytest.mark.smoke
def test_bad_input(ns, row):
    entry, what, call, exc_name, pattern = row
    if UNDER_VALGRIND and (entry, what) in VALGRIND_ANSWERS_FOR_THE_KERNEL:
        pytest.skip(VALGRIND_ANSWERS_FOR_THE_KERNEL[entry, what])
    with pytest.raises(BaseException) as info:
        eval(call, dict(ns))
    e = info.value
    assert type(e).__name__ == exc_name, f"{call} raised {type(e).__name__}: {e}"
    assert _matches(pattern, str(e)), f"{call}: message {str(e)!r} != {pattern!r}"


def test_rows_are_unique_and_many():
    assert len({(r[0], r[1]) for r in ROWS}) == len(ROWS)
    assert len(ROWS) >= 100


def _cell(text):
    return text.replace("|", "\\|")


def render():
    out = [
        "# Bad inputs and the exceptions they raise",
        "",
        "Every public entry point, the bad inputs tried, and the exception each",
        "gets (type and message). Each row is a test in tests/test_errors.py,",
        "and this page is generated from that test's table",
        "(`PYTHONPATH=. python tests/test_errors.py`): do not edit it by hand.",
        "In a message, `*` stands for a part that changes from run to run",
        "(a temporary path, a generated segment name, Python's own wording where",
        "3.13 changed it). In a call, `P` is a",
        "16 KiB file, `FD` a read-only descriptor on it, `WFD` a read-write",
        "descriptor, `M` a 4 KiB anonymous fastio.mmap, `RM` a read-only one,",
        "`SEG` an anonymous mapping holding `LOCK` (offset 0) and `SEM`",
        "(offset 192), `CH` a Channel, `Q` a Queue, `PR`/`PW2` pipe ends; a",
        "leading `C` (`CM`, `CB`, `CSHM`, ...) means the object is closed.",
        "",
        "Errors the kernel reports are OSError subclasses chosen by errno; their",
        "message is the errno text and the syscall (and the path, when there is",
        "one). Errors found by fastio's own checks are ValueError (bad value,",
        "closed object), TypeError (wrong type) or OverflowError (negative or",
        "too large for a size, as the stdlib mmap does), and name the argument",
        "and its value.",
        "",
        "An integer argument (a count, offset, id, mode or flag word) takes an",
        "int (a bool counts as one) or any object with `__index__` (an",
        "exception raised there propagates unchanged) and refuses a float with",
        "TypeError; a value outside the range the argument accepts is",
        "`NAME out of range [lo, hi]: NAME=value`: ValueError, or OverflowError",
        "when the argument's C type cannot hold the value (an id past a C int,",
        "a negative unsigned flag word, anything past 64 bits), as Python's own",
        "converters say, unless a row shows a check of its own.",
        "A timeout takes None or inf (no limit) or seconds in [0, 1e9] (Lock",
        "and Semaphore `acquire` also -1, as threading.Lock): NaN or negative is ValueError, past 1e9 OverflowError,",
        "a non-number TypeError.",
        "",
        f"{len(ROWS)} rows.",
        "",
        "| Entry point | Bad input | Call | Exception | Message |",
        "|---|---|---|---|---|",
    ]
    for entry, what, call, exc_name, pattern in ROWS:
        out.append(f"| {_cell(entry)} | {_cell(what)} | `{_cell(call)}` | "
                   f"{exc_name} | {_cell(pattern)} |")
    return "\n".join(out) + "\n"


def test_doc_is_current():
    assert DOC.read_text() == render(), (
        "docs/errors.md is stale: run PYTHONPATH=. python tests/test_errors.py")


if __name__ == "__main__":
    DOC.write_text(render())
    print(f"wrote {DOC} ({len(ROWS)} rows)", file=sys.stderr)
