/*
 * A stand-in for Windows' bcryptprimitives.dll, used only by scripts/windows-smoke.sh.
 *
 * Rust's standard library asks bcryptprimitives.dll for ProcessPrng (since Rust 1.78) to
 * seed hash maps and random numbers. Debian's wine 8 has no such DLL, so a Windows build of
 * lomob cannot start under it. This one exports ProcessPrng and forwards it to advapi32's
 * SystemFunction036 (RtlGenRandom), which wine has. Placed beside lomob.exe, it is loaded
 * before any system copy. Built from this source by the smoke script with mingw; never
 * shipped with lomob (a real Windows has the real DLL).
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG n = length > 0x10000000 ? 0x10000000 : (ULONG)length;
        if (!SystemFunction036(data, n))
            return FALSE;
        data += n;
        length -= n;
    }
    return TRUE;
}

BOOL WINAPI DllMain(HINSTANCE instance, DWORD reason, LPVOID reserved)
{
    (void)instance;
    (void)reason;
    (void)reserved;
    return TRUE;
}
