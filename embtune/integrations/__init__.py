"""Adapters that let LangChain and LlamaIndex use embtune models and collections.

Each framework has its own module (``embtune.integrations.langchain``,
``embtune.integrations.llamaindex``) behind its own extra, so installing embtune never pulls
either framework, and ``core`` never imports anything from here. This package file imports
nothing heavy on purpose: it is loaded before a module's missing-extra check can speak.
"""
