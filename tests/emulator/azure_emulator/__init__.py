"""A local, honest stand-in for the Azure endpoints the collection talks to.

Entra ID token endpoints, the ARM metadata endpoint, and the Microsoft.Compute / Microsoft.Features /
Microsoft.Resources operations used for VM and scale-set extensions, served over HTTPS with a CA of its own.
State comes from a YAML seed; tests steer it through the admin API under /_emulator/.
"""
